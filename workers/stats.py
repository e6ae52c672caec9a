"""Statistics of a training file with the base model's tokenizer and template.

``token_lengths(config, emit)`` renders the rows exactly as the trainer will (see
``workers.templates``) and keeps, per row, the token count and how many carry loss — small
arrays the caller caches by (file sha256, tokenizer, template). ``length_summary`` then answers
for any ``max_length`` in milliseconds: histograms of prompt and completion tokens, the share of
rows truncated and the target tokens lost, and a suggested ``max_length``. Structure (roles,
turns, character sets) is counted in the same pass.
"""

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

from workers.events import Emit, ValidationProgress, emit_nothing
from workers.formats import CHAT, PROMPT_COMPLETION, jsonl_rows
from workers.loading import tokenizer_load
from workers.templates import TemplateError, render

BINS = 10  # about this many bins between the shortest row and the longest (or the 99th percentile)


@dataclass(frozen=True)
class StatsConfig:
    """One pass of token statistics over a normalised training file.

    path: local JSONL of normalised rows (no default).
    format: the rows' training format, chat|prompt_completion|text (no default).
    tokenizer_path: local directory or hub id of the base model's tokenizer (no default).
    template: "" for the model's own chat template, or a name in ``workers.templates``; default "".
    max_rows: rows tokenized at most; a larger file is sampled evenly; default 100000.
    total_rows: rows in the file when known, to sample evenly; default 0 (unknown: the first rows).
    """

    path: str
    format: str
    tokenizer_path: str
    template: str = ""
    max_rows: int = 100_000
    total_rows: int = 0


@dataclass
class TokenLengths:
    """Per examined row: ``totals`` (all tokens) and ``targets`` (tokens carrying loss), before truncation.

    rows: rows examined; sampled: True when not every row was; structure: roles, turns, scripts.
    errors: rows the template could not render (first few, with their row numbers).
    """

    totals: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    rows: int = 0
    sampled: bool = False
    structure: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)


def token_lengths(config: StatsConfig, emit: Emit = emit_nothing) -> TokenLengths:
    """Tokenize the rows of ``config.path`` as the trainer will; see the module docstring."""
    tokenizer = tokenizer_load(config.tokenizer_path, template=config.template)
    stride = max(1, math.ceil(config.total_rows / config.max_rows)) if config.total_rows else 1
    result = TokenLengths(sampled=stride > 1)
    roles, turns, scripts = Counter(), Counter(), Counter()
    for index, row in enumerate(jsonl_rows(config.path, every=stride)):
        number = index * stride + 1
        if result.rows >= config.max_rows:
            result.sampled = True
            break
        _structure(row, config.format, roles, turns, scripts)
        try:
            rendered = render(tokenizer, row, config.format, template=config.template, max_length=1 << 30)
        except TemplateError as exc:
            if len(result.errors) < 5:
                result.errors.append({"row": number, "message": str(exc)})
            continue
        result.rows += 1
        result.totals.append(rendered.total_tokens)
        result.targets.append(rendered.target_tokens)
        if result.rows % 2000 == 0:
            emit(ValidationProgress(number, config.total_rows or number, number))
    result.structure = {"roles": dict(roles), "turns": _histogram_plain(turns), "scripts": dict(scripts)}
    return result


def _structure(row: dict, fmt: str, roles: Counter, turns: Counter, scripts: Counter) -> None:
    if fmt == CHAT:
        messages = row["messages"]
        roles.update(m["role"] for m in messages)
        turns[sum(1 for m in messages if m["role"] == "assistant")] += 1
        text = " ".join(m.get("content") or "" for m in messages)
    elif fmt == PROMPT_COMPLETION:
        text = row["prompt"] + " " + row["completion"]
    else:
        text = row.get("text", "")
    scripts[script_of(text)] += 1


_SCRIPTS = ((0x0370, 0x03FF, "greek"), (0x0400, 0x04FF, "cyrillic"), (0x0590, 0x05FF, "hebrew"),
            (0x0600, 0x06FF, "arabic"), (0x0900, 0x097F, "devanagari"), (0x3040, 0x30FF, "japanese"),
            (0x4E00, 0x9FFF, "cjk"), (0xAC00, 0xD7AF, "hangul"))


def script_of(text: str) -> str:
    """The character set a text is mostly written in: ascii, latin, cyrillic, cjk, ... or other."""
    if text.isascii():
        return "ascii"
    found = Counter()
    for char in text:
        code = ord(char)
        if code < 0x80:
            continue  # digits, spaces and punctuation say nothing of the language
        if code < 0x250:
            found["latin"] += 1
            continue
        for low, high, name in _SCRIPTS:
            if low <= code <= high:
                found[name] += 1
                break
        else:
            found["other"] += 1
    return found.most_common(1)[0][0]


def _histogram_plain(counter: Counter) -> dict:
    return {str(key): counter[key] for key in sorted(counter)}


def histogram_edges(values: list[int], bins: int = BINS) -> tuple[list[int], bool]:
    """Bin edges that fit ``values``: a round width (1, 2 or 5 × 10^k tokens) giving about ``bins``
    bins (fewer for few values) from the smallest value to the largest, and ``open`` True when a long tail (largest over
    twice the 99th percentile) is folded into a last bin without an upper edge. No bin lies wholly
    before the smallest value or after the largest."""
    if not values:
        return [], False
    low, high = min(values), max(values)
    bins = min(bins, math.ceil(math.log2(len(values))) + 1)  # Sturges: a handful of rows gets a handful of bins
    p99 = percentile(values, 0.99)
    tail = high > 2 * p99 and p99 > low
    top = p99 if tail else high
    width = _round_width(low, top, bins)
    start = low // width * width
    edges = list(range(start, top + 1, width)) + [(top // width + 1) * width]
    return edges, tail


def _round_width(low: int, top: int, bins: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that covers ``low``..``top`` in at most ``bins`` + 2 bins."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            width = step * scale
            if top // width - low // width + 1 <= bins + 2:
                return width
        scale *= 10


def histogram(values: list[int], edges: list[int] | None = None, tail: bool = False) -> list[dict]:
    """Counts of ``values`` per bin ``[from, to)``; ``edges`` default to ``histogram_edges(values)``.

    With ``tail`` the last bin has ``to`` None and holds everything from its ``from`` up.
    """
    if edges is None:
        edges, tail = histogram_edges(values)
    if not edges:
        return []
    bins = [{"from": edges[i], "to": edges[i + 1], "count": 0} for i in range(len(edges) - 1)]
    if tail:
        bins.append({"from": edges[-1], "to": None, "count": 0})
    for value in values:
        index = bisect.bisect_right(edges, value) - 1
        bins[max(0, min(index, len(bins) - 1))]["count"] += 1
    return bins


def percentile(values: list[int], share: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def length_summary(lengths: TokenLengths, *, max_length: int, context_length: int | None = None) -> dict:
    """What ``max_length`` does to these rows, and the ``max_length`` we would suggest.

    Lost target tokens assume the answer comes last (exact for single-turn rows, an estimate for
    multi-turn conversations whose earlier answers survive truncation).
    """
    totals, targets = lengths.totals, lengths.targets
    prompts = [total - target for total, target in zip(totals, targets, strict=True)]
    truncated = [(total, target) for total, target in zip(totals, targets, strict=True) if total > max_length]
    lost = sum(min(target, total - max_length) for total, target in truncated)
    emptied = sum(1 for total, target in truncated if total - target >= max_length)
    p99 = percentile(totals, 0.99)
    shared = histogram_edges([*prompts, *targets])
    suggested = max(64, math.ceil(p99 / 64) * 64)
    if context_length:
        suggested = min(suggested, context_length)
    return {
        "rows": lengths.rows,
        "sampled": lengths.sampled,
        "max_length": max_length,
        "tokens": {"total": sum(totals), "prompt": sum(prompts), "completion": sum(targets),
                   "mean": round(sum(totals) / len(totals), 1) if totals else 0, "p50": percentile(totals, 0.5),
                   "p95": percentile(totals, 0.95), "p99": p99, "max": max(totals, default=0)},
        # Prompts and completions share bins fitted to both, so a chart can overlay them.
        "histogram": {"prompt": histogram(prompts, *shared), "completion": histogram(targets, *shared),
                      "total": histogram(totals)},
        "truncated_rows": len(truncated),
        "truncated_share": round(len(truncated) / len(totals), 4) if totals else 0.0,
        "target_tokens_lost": lost,
        "target_tokens_lost_share": round(lost / sum(targets), 4) if sum(targets) else 0.0,
        "rows_without_trainable_tokens": emptied + sum(1 for target in targets if target == 0),
        "suggested_max_length": suggested,
        "structure": lengths.structure,
        "errors": lengths.errors,
    }
