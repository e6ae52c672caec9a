"""Evaluate models on the same rows with the same decoding: loss, perplexity and generation metrics.

Every target (the base model, the tuned model, its checkpoints) reads the same prompts, tokenized
by the same tokenizer (the one saved with the tuned model: it carries the chat template it was
trained with), and decodes greedily. Per target:

- ``eval_loss`` / ``perplexity``: mean negative log-likelihood of the reference answers' tokens
  (the tokens that carry loss in training), and its exponential;
- ``bleu`` (sacrebleu, case-insensitive, 0..100), ``rouge1`` / ``rouge2`` / ``rougeL`` (rouge-score F1, 0..1) and
  ``exact_match`` (0..1, after trimming, lower-casing and collapsing white space) of the greedy
  output against the reference;
- ``accuracy`` (0..1) when the references look like class labels (few distinct short answers):
  the share of outputs that begin with the right label.

Plain-text rows have no prompt to answer, so they get loss and perplexity only.
"""

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.events import Emit, Progress
from workers.formats import CHAT, PREFERENCE, PROMPT_COMPLETION, TEXT, format_detect, jsonl_rows, row_normalise
from workers.loading import model_load, tokenizer_load

ROUGE = ("rouge1", "rouge2", "rougeL")
GENERATION_METRICS = ("bleu", *ROUGE, "exact_match", "accuracy")
LOSS_METRICS = ("eval_loss", "perplexity")
METRICS = LOSS_METRICS + GENERATION_METRICS
LOWER_IS_BETTER = {"eval_loss", "perplexity"}
MAX_LABELS = 32  # more distinct references than this is not classification
MAX_LABEL_WORDS = 4


@dataclass(frozen=True)
class EvalTarget:
    """One model to evaluate.

    name: how results are labelled, e.g. "base", "tuned", "checkpoint-20" (no default).
    adapter_path: local directory of a PEFT adapter or of a whole fine-tuned model; None
        evaluates the base model itself; default None.
    """

    name: str
    adapter_path: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of one or more targets on one data file.

    base_model_path: local directory or hub id of the base model (no default).
    data_file: local JSONL of normalised rows: chat, prompt/completion, text or preference
        (the chosen answer is the reference) (no default).
    targets: the models to evaluate, in order (no default).
    tokenizer_path: where the tokenizer (and chat template) comes from; default: the first
        target's directory when it holds a tokenizer, else the base model.
    max_rows: rows evaluated, from the top of the file; default 100.
    max_new_tokens: tokens generated per row (greedy); default 32; 0 skips generation.
    max_length: tokens of prompt + reference scored for loss, longer rows are cut; default 1024.
    keep_rows: per-row outputs kept in the result; default 50.
    """

    base_model_path: str
    data_file: str
    targets: tuple[EvalTarget, ...]
    tokenizer_path: str | None = None
    max_rows: int = 100
    max_new_tokens: int = 32
    max_length: int = 1024
    keep_rows: int = 50


@dataclass(frozen=True)
class EvalResult:
    """metrics: target name → metric name → value. rows: per-row prompt, reference and each
    target's output and loss. classification: whether accuracy applies (label-like references)."""

    metrics: dict[str, dict[str, float]]
    rows: list[dict]
    rows_evaluated: int
    classification: bool
    wall_seconds: float
    labels: list[str] = field(default_factory=list)


@dataclass
class _Example:
    prompt_ids: list[int]
    target_ids: list[int]
    prompt_text: str
    reference: str
    generate: bool


class EvalError(ValueError):
    """The data cannot be evaluated (no rows, or no row with an answer to score)."""


def run_evaluation(config: EvalConfig, emit: Emit) -> EvalResult:
    """Score every target on the same examples; report progress as rows done over rows to do."""
    started = time.monotonic()
    first = config.targets[0].adapter_path if config.targets and not config.tokenizer_path else None
    tokenizer = tokenizer_load(config.tokenizer_path or config.base_model_path, adapter_path=first)
    examples = _examples(config, tokenizer)
    labels = _labels([e.reference for e in examples if e.generate])
    total = len(examples) * len(config.targets)
    metrics, outputs = {}, {}
    for index, target in enumerate(config.targets):
        model = model_load(config.base_model_path, adapter_path=target.adapter_path)

        def progress(done: int, offset: int = index * len(examples)) -> None:
            emit(Progress(step=offset + done, total_steps=total))

        scored = _score(model, tokenizer, examples, config, progress)
        metrics[target.name] = _metrics(examples, scored, labels)
        outputs[target.name] = scored
        del model
    return EvalResult(metrics=metrics, rows=_rows(examples, outputs, config.keep_rows),
                      rows_evaluated=len(examples), classification=bool(labels),
                      wall_seconds=time.monotonic() - started, labels=labels)


# --- examples ------------------------------------------------------------------------------


def _examples(config: EvalConfig, tokenizer) -> list[_Example]:
    examples = []
    for row in jsonl_rows(config.data_file):
        example = _example(tokenizer, row, config.max_length)
        if example is not None:
            examples.append(example)
        if len(examples) >= config.max_rows:
            break
    if not examples:
        raise EvalError(f"{Path(config.data_file).name} has no row with an answer to score")
    return examples


def _example(tokenizer, row: dict, max_length: int) -> _Example | None:
    fmt = format_detect(row)
    if fmt == PREFERENCE:  # the chosen answer is the reference
        row = _preference_as_pair(row)
        fmt = format_detect(row)
    if fmt == CHAT:
        return _chat_example(tokenizer, row["messages"], max_length)
    if fmt == PROMPT_COMPLETION:
        prompt_ids = _encode(tokenizer, row["prompt"])
        target_ids = _encode(tokenizer, row["completion"]) + _eos(tokenizer)
        return _cut(prompt_ids, target_ids, max_length, row["prompt"], row["completion"], generate=True)
    if fmt == TEXT:
        ids = _encode(tokenizer, row["text"]) + _eos(tokenizer)
        return _cut([], ids, max_length, "", row["text"], generate=False)
    return None


def _preference_as_pair(row: dict) -> dict:
    if "preferred_output" in row:  # OpenAI's shape: a JSONL upload is kept as it was uploaded
        row = row_normalise(row, PREFERENCE)
    prompt, chosen = row.get("prompt", ""), row["chosen"]
    if isinstance(chosen, list):
        messages = (prompt if isinstance(prompt, list) else []) + chosen
        if isinstance(prompt, str) and prompt:
            messages = [{"role": "user", "content": prompt}, *chosen]
        return {"messages": messages}
    return {"prompt": prompt if isinstance(prompt, str) else "", "completion": chosen}


def _chat_example(tokenizer, messages: list[dict], max_length: int) -> _Example | None:
    """The conversation up to its last assistant turn; that turn is the reference."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        return None
    history = [{"role": m["role"], "content": m.get("content") or ""} for m in messages[:last]]
    reference = messages[last].get("content") or ""
    prompt_text = _chat_text(tokenizer, history, generation_prompt=True)
    prompt_ids = _encode(tokenizer, prompt_text)
    target_ids = _chat_target(tokenizer, history, reference, prompt_ids)
    return _cut(prompt_ids, target_ids, max_length, prompt_text, reference, generate=True)


def _chat_target(tokenizer, history: list[dict], reference: str, prompt_ids: list[int]) -> list[int]:
    """The tokens of the answer that carry loss in training: the template's generation block
    (answer and end-of-turn mark) when it marks one, else what follows the prompt."""
    conversation = [*history, {"role": "assistant", "content": reference}]
    if tokenizer.chat_template and "generation" in tokenizer.chat_template:
        out = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        if ids[:len(prompt_ids)] == prompt_ids and any(mask[len(prompt_ids):]):
            return [t for t, m in zip(ids[len(prompt_ids):], mask[len(prompt_ids):], strict=True) if m]
    full_ids = _encode(tokenizer, _chat_text(tokenizer, conversation))
    if full_ids[:len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        return full_ids[len(prompt_ids):]
    return _encode(tokenizer, reference) + _eos(tokenizer)


def _chat_text(tokenizer, messages: list[dict], *, generation_prompt: bool = False) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    text = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
    return text + "\n" if generation_prompt else text  # the "completion" template's joining rule


def _cut(prompt_ids, target_ids, max_length, prompt_text, reference, *, generate) -> _Example | None:
    prompt_ids = prompt_ids[-max(1, max_length // 2):] if len(prompt_ids) >= max_length else prompt_ids
    target_ids = target_ids[:max_length - len(prompt_ids)]
    if not target_ids:
        return None
    return _Example(prompt_ids=prompt_ids, target_ids=target_ids, prompt_text=prompt_text,
                    reference=reference.strip(), generate=generate)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


# --- scoring -------------------------------------------------------------------------------


def _score(model, tokenizer, examples: list[_Example], config: EvalConfig,
           progress: Callable[[int], None]) -> list[dict]:
    scored = []
    for done, example in enumerate(examples, start=1):
        nll = _nll(model, example)
        output = _generate(model, tokenizer, example, config.max_new_tokens) if example.generate else None
        scored.append({"nll": nll, "tokens": len(example.target_ids), "output": output})
        progress(done)
    return scored


def _nll(model, example: _Example) -> float:
    """Summed negative log-likelihood of the reference tokens given the prompt."""
    import torch

    ids = torch.tensor([example.prompt_ids + example.target_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    targets = ids[0, 1:]
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    start = max(len(example.prompt_ids) - 1, 0)
    if not example.prompt_ids:  # a text row: the first token has nothing before it to predict it
        start = 0
    return float(losses[start:].sum())


def _generate(model, tokenizer, example: _Example, max_new_tokens: int) -> str | None:
    """Greedy decoding until an end-of-sequence token or ``max_new_tokens``."""
    import torch

    if max_new_tokens <= 0:
        return None
    ids = torch.tensor([example.prompt_ids])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(example.prompt_ids):], skip_special_tokens=True).strip()


# --- metrics -------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, trimmed, white space collapsed: how exact match and labels compare."""
    return re.sub(r"\s+", " ", text).strip().lower()


def _labels(references: list[str]) -> list[str]:
    """The label set when the references look like classes (few, short, repeated), else []."""
    distinct = sorted({normalise(r) for r in references})
    short = all(0 < len(label.split()) <= MAX_LABEL_WORDS for label in distinct)
    repeated = len(distinct) <= max(2, len(references) // 2)
    return distinct if distinct and short and repeated and len(distinct) <= MAX_LABELS else []


def label_of(output: str, labels: list[str]) -> str | None:
    """The label an output names: the longest label it begins with."""
    text = normalise(output)
    found = [label for label in labels if text == label or text.startswith(label + " ") or
             re.match(re.escape(label) + r"\W", text)]
    return max(found, key=len) if found else None


def _metrics(examples: list[_Example], scored: list[dict], labels: list[str]) -> dict[str, float]:
    tokens = sum(s["tokens"] for s in scored)
    loss = sum(s["nll"] for s in scored) / tokens
    metrics = {"eval_loss": round(loss, 6), "perplexity": round(math.exp(min(loss, 50.0)), 4)}
    pairs = [(s["output"], e.reference) for e, s in zip(examples, scored, strict=True) if s["output"] is not None]
    if pairs:
        metrics.update(generation_metrics([p for p, _ in pairs], [r for _, r in pairs], labels))
    return metrics


def generation_metrics(predictions: list[str], references: list[str], labels: list[str]) -> dict[str, float]:
    """BLEU, ROUGE-1/2/L, exact match and (with ``labels``) accuracy of predictions against references."""
    import sacrebleu
    from rouge_score import rouge_scorer

    pairs = list(zip(predictions, references, strict=True))
    scorer = rouge_scorer.RougeScorer(list(ROUGE), use_stemmer=False)
    rouge = [scorer.score(ref, pred) for pred, ref in pairs]
    metrics = {
        # effective order: short answers (a label, a number) still get a BLEU score instead of 0;
        # lower case, as exact match and accuracy compare
        "bleu": round(sacrebleu.BLEU(effective_order=True, lowercase=True)
                      .corpus_score(predictions, [references]).score, 4),
        **{name: round(sum(r[name].fmeasure for r in rouge) / len(rouge), 6) for name in ROUGE},
        "exact_match": round(sum(normalise(p) == normalise(r) for p, r in pairs) / len(pairs), 6),
    }
    if labels:
        metrics["accuracy"] = round(sum(label_of(p, labels) == normalise(r) for p, r in pairs) / len(pairs), 6)
    return metrics


def _rows(examples: list[_Example], outputs: dict[str, list[dict]], keep: int) -> list[dict]:
    rows = []
    for index, example in enumerate(examples[:keep]):
        rows.append({
            "row": index + 1, "prompt": example.prompt_text[-1000:], "reference": example.reference[:1000],
            "outputs": {name: scored[index]["output"] for name, scored in outputs.items()},
            "loss": {name: round(scored[index]["nll"] / scored[index]["tokens"], 6)
                     for name, scored in outputs.items()},
        })
    return rows


def improvement(metric: str, base: float, tuned: float) -> float:
    """Relative improvement of ``tuned`` over ``base`` (0.05 = 5% better), whichever way is better."""
    if base == 0:
        return 0.0 if tuned == base else (math.inf if (tuned < base) == (metric in LOWER_IS_BETTER) else -math.inf)
    change = (tuned - base) / abs(base)
    return -change if metric in LOWER_IS_BETTER else change
