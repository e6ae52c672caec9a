"""The ``llm_designed`` strategy's conversation: a chat model (the designer) is asked for a network as
declarative JSON (``workers.vision.nets``); a reply that is not JSON, uses a layer off the allow-list or
breaks the parameter or multiply-add budget is answered with the reason and asked again, up to
``design_attempts`` times. Nothing the designer writes is ever executed."""

import json
from collections.abc import Callable

from workers.events import Emit, LogLine
from workers.vision.nets import LAYERS, DesignError, DesignStats, design_check

# messages (OpenAI's chat format) → the reply's text
Designer = Callable[[list[dict]], str]


def design_prompt(
    *, classes: list[str], counts: dict, image_size: int, max_parameters: int, max_mflops: int
) -> list[dict]:
    allowed = "; ".join(
        f"{kind}({', '.join(f'{name} {low}-{high}' for name, (low, high) in fields.items())})"
        for kind, fields in LAYERS.items()
    )
    return [
        {
            "role": "system",
            "content": "You design small image classifiers. Reply with one JSON object and nothing else.",
        },
        {
            "role": "user",
            "content": (
                f"Design a convolutional network for {len(classes)} classes ({', '.join(classes[:20])}) with "
                f"{sum(counts.values())} training images of {image_size}x{image_size} RGB pixels. "
                f'Reply with JSON {{"layers": [{{"type": "conv", "out": 16, "kernel": 3}}, ...]}}. Allowed layer '
                f"types and integer fields: {allowed}. Dropout is in percent. End the features with "
                "global_avg_pool (a final linear layer to the classes is added for you). Budget: at most "
                f"{max_parameters:,} parameters and {max_mflops:,} million multiply-adds per image."
            ),
        },
    ]


def design_parse(text: str) -> dict:
    """The first JSON object in the reply (a model may wrap it in prose or a code fence)."""
    start = text.find("{") if isinstance(text, str) else -1
    if start < 0:
        raise DesignError("the reply holds no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError as exc:
        raise DesignError(f"the reply is not valid JSON: {exc}") from exc
    return value


def design_ask(
    designer: Designer,
    *,
    classes: list[str],
    counts: dict,
    image_size: int,
    max_parameters: int,
    max_mflops: int,
    attempts: int,
    emit: Emit,
) -> tuple[dict, DesignStats, int]:
    """(the accepted design, its costs, the proposals it took); ``DesignError`` when none of ``attempts``
    proposals passed, naming the last reason."""
    messages = design_prompt(
        classes=classes, counts=counts, image_size=image_size, max_parameters=max_parameters, max_mflops=max_mflops
    )
    problem = ""
    for attempt in range(1, attempts + 1):
        reply = designer(list(messages))
        try:
            design = design_parse(reply)
            stats = design_check(
                design,
                image_size=image_size,
                classes=len(classes),
                max_parameters=max_parameters,
                max_mflops=max_mflops,
            )
        except DesignError as error:
            problem = str(error)
            emit(LogLine(f"Design proposal {attempt} of {attempts} refused: {problem}", level="warn"))
            messages += [
                {"role": "assistant", "content": str(reply)[:4000]},
                {
                    "role": "user",
                    "content": f"That design was refused: {problem}. Reply with a corrected JSON design only.",
                },
            ]
            continue
        emit(
            LogLine(
                f"Design proposal {attempt} accepted: {len(design['layers'])} layers, "
                f"{stats.parameters:,} parameters, {stats.mflops:,.1f} million multiply-adds per image"
            )
        )
        return {"layers": design["layers"]}, stats, attempt
    raise DesignError(f"the designer's {attempts} proposals were all refused; the last: {problem}")
