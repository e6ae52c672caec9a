"""Make a new version of a data set: the original is only read, the result is new files.

Operations, applied in the order given, to normalised rows:

- ``{"op": "map_columns", "column_map": {"question": "prompt"}}``: rename keys.
- ``{"op": "convert", "to": "chat" | "prompt_completion" | "text"}``: change the format.
- ``{"op": "dedup", "near": false, "near_threshold": 0.85}``: drop exact copies (and near ones).
- ``{"op": "mask_pii", "kinds": ["email", ...]}``: replace personal data by ``[EMAIL]`` etc.
- ``{"op": "filter_length", "min_chars": 0, "max_chars": 32000}``: drop rows outside the range,
  counted in characters of the row's text; and/or ``"min_tokens"``/``"max_tokens"`` with
  ``"model"`` (a base model's name; its tokenizer comes in ``PrepareConfig.tokenizers``) and
  ``"template"`` (default ``""``, the model's own): counted in tokens, the row rendered exactly as
  the trainer will (``workers.templates.render``, before truncation).
- ``{"op": "clean", "unicode": "nfc" | "nfkc" | null, "control_chars": true, "whitespace": true,
  "mojibake": true}``: repair mojibake (ftfy), normalise Unicode, drop control characters and tidy
  whitespace in every text of a row (``workers.cleaning``).
- ``{"op": "chunk", "model": "tiny-llama", "max_tokens": 512, "overlap_tokens": 64}``: cut each
  plain-text row longer than ``max_tokens`` (counted by the model's tokenizer, without special
  tokens) into rows on sentence boundaries, consecutive ones sharing up to ``overlap_tokens`` of
  whole sentences (``workers.chunking``); for pretraining-style data, so text rows only.
- ``{"op": "language", "keep": ["en"], "min_confidence": 0.5}``: keep rows detected (py3langid, offline)
  as one of ``keep`` with at least that confidence; the lineage counts the languages seen.
- ``{"op": "quality", "min_score": 0.0}``: score every row 0..1 (``workers.quality.row_quality``) and
  drop those below ``min_score``; the lineage keeps the scores' histogram (tenths) and mean.
- ``{"op": "split", "validation_share": 0.1, "seed": 42, "stratify": "source"}``: write a second
  file of validation rows; stratified by the ``source`` key when rows carry one (seeded, exact
  per source).

``run_prepare(config, emit) -> PrepareResult`` streams the rows (two passes when near-duplicates
or a split need to see every row first) and counts what each operation did. Each operation carries
the ``version`` of its implementation (``OPERATION_VERSIONS``), recorded in the lineage, so a version
made by an older implementation can be told apart.
"""

import json
import random
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from workers.chunking import text_chunks
from workers.cleaning import UNICODE_FORMS, row_clean
from workers.events import Emit, ValidationProgress, emit_nothing
from workers.formats import CHAT, PREFERENCE, PROMPT_COMPLETION, TEXT, format_detect, jsonl_rows
from workers.language import language_codes, language_detect
from workers.loading import tokenizer_load
from workers.quality import (
    PII_KINDS,
    MinHasher,
    near_duplicate_groups,
    row_digest,
    row_mask,
    row_quality,
    shingles,
)
from workers.templates import TEMPLATE_NAMES, TemplateError, render

OPERATIONS = ("map_columns", "convert", "clean", "dedup", "mask_pii", "language", "quality", "filter_length", "chunk",
              "split")
# bump an operation's number when its output for the same rows and options changes
OPERATION_VERSIONS = {name: 1 for name in OPERATIONS}
TOKEN_COUNTING = ("filter_length", "chunk")  # the operations that name a base model for its tokenizer
CONVERSIONS = (CHAT, PROMPT_COMPLETION, TEXT)


class PrepareError(ValueError):
    """An operation is malformed or cannot apply to these rows; ``param`` names it."""

    def __init__(self, message: str, param: str = "operations") -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class PrepareConfig:
    """One preparation.

    path: local JSONL of the parent's normalised rows (no default).
    format: the parent's format (no default).
    output_dir: where ``train.jsonl`` (and ``validation.jsonl`` for a split) are written (no default).
    operations: the operations, as dicts (see the module docstring); default none (a plain copy).
    tokenizers: (model name, local tokenizer path or hub id) pairs for the operations that count
        tokens; default none.
    """

    path: str
    format: str
    output_dir: str
    operations: tuple = ()
    tokenizers: tuple = ()


@dataclass
class PrepareResult:
    """What came out: rows written per file, and what each operation did (in the order applied)."""

    format: str
    files: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    applied: list = field(default_factory=list)


def operations_check(operations, fmt: str) -> list[dict]:
    """The operations, checked and completed with their defaults; ``PrepareError`` names a bad one."""
    if not isinstance(operations, list | tuple):
        raise PrepareError("operations must be a list of {op: ...} objects")
    checked, current = [], fmt
    for index, operation in enumerate(operations):
        where = f"operations[{index}]"
        if not isinstance(operation, dict) or operation.get("op") not in OPERATIONS:
            raise PrepareError(f"{where}.op must be one of {', '.join(OPERATIONS)}", f"{where}.op")
        op = dict(operation)
        name = op["op"]
        op["version"] = OPERATION_VERSIONS[name]
        if name == "map_columns":
            mapping = op.get("column_map")
            if not isinstance(mapping, dict) or not mapping or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
                raise PrepareError(f"{where}.column_map must map names to names", f"{where}.column_map")
        elif name == "convert":
            if op.get("to") not in CONVERSIONS:
                raise PrepareError(f"{where}.to must be one of {', '.join(CONVERSIONS)}", f"{where}.to")
            if current == PREFERENCE:
                raise PrepareError(f"{where}: preference pairs cannot be converted", f"{where}.to")
            current = op["to"]
        elif name == "dedup":
            op.setdefault("near", False)
            op.setdefault("near_threshold", 0.85)
            if not isinstance(op["near_threshold"], int | float) or not 0.1 <= op["near_threshold"] <= 1:
                raise PrepareError(f"{where}.near_threshold must be from 0.1 to 1", f"{where}.near_threshold")
        elif name == "mask_pii":
            op.setdefault("kinds", list(PII_KINDS))
            if not isinstance(op["kinds"], list) or not set(op["kinds"]) <= set(PII_KINDS) or not op["kinds"]:
                raise PrepareError(f"{where}.kinds must be some of {', '.join(PII_KINDS)}", f"{where}.kinds")
        elif name == "filter_length":
            _length_check(op, where, current)
        elif name == "clean":
            _clean_check(op, where)
        elif name == "chunk":
            _chunk_check(op, where, current)
        elif name == "language":
            _language_check(op, where)
        elif name == "quality":
            op.setdefault("min_score", 0.0)
            if isinstance(op["min_score"], bool) or not isinstance(op["min_score"], int | float) \
                    or not 0 <= op["min_score"] <= 1:
                raise PrepareError(f"{where}.min_score must be from 0 to 1", f"{where}.min_score")
        elif name == "split":
            op.setdefault("seed", 42)
            op.setdefault("stratify", "source")
            share = op.get("validation_share", 0.1)
            if not isinstance(share, int | float) or not 0 < share < 1:
                raise PrepareError(f"{where}.validation_share must be between 0 and 1", f"{where}.validation_share")
            op["validation_share"] = share
            if index != len(operations) - 1:
                raise PrepareError(f"{where}: split must be the last operation", f"{where}.op")
        checked.append(op)
    return checked


def _length_check(op: dict, where: str, fmt: str) -> None:
    """Complete a ``filter_length`` with its defaults; a token bound needs the model that counts."""
    op.setdefault("min_chars", 0)
    op.setdefault("max_chars", None)
    keys = ["min_chars", "max_chars"]
    if "min_tokens" in op or "max_tokens" in op or "model" in op:
        op.setdefault("min_tokens", 0)
        op.setdefault("max_tokens", None)
        op.setdefault("template", "")
        keys += ["min_tokens", "max_tokens"]
        if not isinstance(op.get("model"), str) or not op["model"]:
            raise PrepareError(f"{where}.model must name the base model whose tokenizer counts the tokens",
                               f"{where}.model")
        if op["template"] not in TEMPLATE_NAMES:
            raise PrepareError(f"{where}.template must be one of {', '.join(repr(t) for t in TEMPLATE_NAMES)}",
                               f"{where}.template")
        if fmt == PREFERENCE:
            raise PrepareError(f"{where}: preference pairs are not counted in tokens; use min_chars/max_chars",
                               f"{where}.max_tokens")
    for key in keys:
        if op[key] is not None and (isinstance(op[key], bool) or not isinstance(op[key], int) or op[key] < 0):
            raise PrepareError(f"{where}.{key} must be a whole number", f"{where}.{key}")


def _clean_check(op: dict, where: str) -> None:
    op.setdefault("unicode", "nfc")
    if op["unicode"] not in (*UNICODE_FORMS, None):
        raise PrepareError(f"{where}.unicode must be one of {', '.join(UNICODE_FORMS)} or null", f"{where}.unicode")
    for key in ("control_chars", "whitespace", "mojibake"):
        op.setdefault(key, True)
        if not isinstance(op[key], bool):
            raise PrepareError(f"{where}.{key} must be true or false", f"{where}.{key}")
    if not op["unicode"] and not any(op[key] for key in ("control_chars", "whitespace", "mojibake")):
        raise PrepareError(f"{where}: clean has nothing to do; turn on at least one step", f"{where}.op")


def _chunk_check(op: dict, where: str, fmt: str) -> None:
    op.setdefault("overlap_tokens", 0)
    if fmt != TEXT:
        raise PrepareError(f"{where}: chunk cuts plain-text documents; convert the rows to text first", f"{where}.op")
    if not isinstance(op.get("model"), str) or not op["model"]:
        raise PrepareError(f"{where}.model must name the base model whose tokenizer counts the tokens",
                           f"{where}.model")
    size = op.get("max_tokens")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise PrepareError(f"{where}.max_tokens must be a whole number of at least 8", f"{where}.max_tokens")
    overlap = op["overlap_tokens"]
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < size:
        raise PrepareError(f"{where}.overlap_tokens must be a whole number from 0 to below max_tokens",
                           f"{where}.overlap_tokens")


def _language_check(op: dict, where: str) -> None:
    op.setdefault("min_confidence", 0.5)
    keep = op.get("keep")
    if isinstance(keep, str):
        keep = op["keep"] = [keep]
    known = set(language_codes())
    if not isinstance(keep, list) or not keep or not all(isinstance(c, str) and c in known for c in keep):
        raise PrepareError(f"{where}.keep must list ISO 639-1 language codes, such as [\"en\", \"de\"]",
                           f"{where}.keep")
    confidence = op["min_confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise PrepareError(f"{where}.min_confidence must be from 0 to 1", f"{where}.min_confidence")


class _TokenCounter:
    """Tokens of a row as the trainer will see them, one tokenizer loaded per (model, template)."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self.loaded: dict[tuple[str, str], object] = {}

    def tokenizer(self, model: str, template: str = ""):
        key = (model, template)
        if key not in self.loaded:
            if model not in self.paths:
                raise PrepareError(f"no tokenizer given for model {model!r}", "operations")
            self.loaded[key] = tokenizer_load(self.paths[model], template=template)
        return self.loaded[key]

    def text_counter(self, model: str):
        """Tokens of a plain text, no special tokens: what a chunk adds to a packed sequence."""
        tokenizer = self.tokenizer(model)
        return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, op: dict, row: dict, fmt: str, number: int) -> int:
        tokenizer = self.tokenizer(op["model"], op["template"])
        try:
            return render(tokenizer, row, fmt, template=op["template"], max_length=1 << 30).total_tokens
        except TemplateError as exc:
            raise PrepareError(f"row {number} cannot be counted with {op['model']}: {exc}",
                               f"operations[{op['index']}].template") from exc


def run_prepare(config: PrepareConfig, emit: Emit = emit_nothing) -> PrepareResult:
    """Apply ``config.operations`` to the rows of ``config.path``; see the module docstring."""
    operations = operations_check(list(config.operations), config.format)
    stream_ops = [op for op in operations if op["op"] != "split"]
    split = next((op for op in operations if op["op"] == "split"), None)
    near = next((op for op in stream_ops if op["op"] == "dedup" and op["near"]), None)
    counts = [dict(op) for op in operations]
    for index, op in enumerate(stream_ops):  # split is last: indexes match the request's
        op["index"] = index
    tokens = _TokenCounter(dict(config.tokenizers))
    result = PrepareResult(format=config.format)

    def transformed():
        """Rows after every streaming operation: (index among kept rows, row)."""
        seen: set[bytes] = set()
        for count in counts:  # this generator runs twice when a split must see every row first
            count.update(rows_removed=0, rows_changed=0)
            for key in _TALLIES:
                count.pop(key, None)
        kept = 0
        for number, row in enumerate(jsonl_rows(config.path), start=1):
            fmt = config.format  # each row starts from the parent's format
            rows = [row]  # a chunked document becomes several rows
            for op, count in zip(stream_ops, counts, strict=False):
                if op["op"] == "chunk":
                    rows = [piece for each in rows for piece in _chunk(op, count, each, tokens)]
                    continue
                after, new_fmt = [], fmt
                for each in rows:
                    each, new_fmt = _apply(op, count, each, fmt, seen, number, drop_near, tokens)
                    if each is not None:
                        after.append(each)
                rows, fmt = after, new_fmt
                if not rows:
                    break
            for each in rows:
                kept += 1
                result.format = fmt
                yield kept, each
            if number % 5000 == 0:
                emit(ValidationProgress(number, 0, number))

    drop_near: set[int] = _near_rows(config.path, config.format, near) if near else set()
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    validation_rows = _split_choice(transformed(), split) if split else set()
    train_path, validation_path = out_dir / "train.jsonl", out_dir / "validation.jsonl"
    written = {"train": 0, "validation": 0}
    with open(train_path, "w", encoding="utf-8") as train, \
            (open(validation_path, "w", encoding="utf-8") if split else _Null()) as validation:
        for index, row in transformed():
            part = "validation" if index in validation_rows else "train"
            (validation if part == "validation" else train).write(json.dumps(row, ensure_ascii=False) + "\n")
            written[part] += 1
    result.files = {"train": str(train_path), **({"validation": str(validation_path)} if split else {})}
    result.rows = written if split else {"train": written["train"]}
    if split:
        counts[-1].update({"train_rows": written["train"], "validation_rows": written["validation"]})
    for count in counts:
        if "_score_sum" in count:
            scored = sum(count["score_histogram"])
            count["mean_score"] = round(count.pop("_score_sum") / scored, 3) if scored else None
    result.applied = counts
    return result


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text: str) -> None:
        raise AssertionError("no validation file without a split")


def _text(row: dict) -> str:
    parts = []

    def walk(value):
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key not in ("role", "source"):
                    walk(item)

    walk(row)
    return "\n".join(parts)


def _near_rows(path: str, fmt: str, op: dict) -> set[int]:
    """Row numbers to drop as near-duplicates of an earlier row (computed on the parent's rows)."""
    hasher = MinHasher(64)
    signatures, numbers = [], []
    for number, row in enumerate(jsonl_rows(path), start=1):
        signatures.append(hasher.signature(shingles(_text(row))))
        numbers.append(number)
    drop = set()
    for group in near_duplicate_groups(signatures, bands=16, threshold=op["near_threshold"]):
        drop.update(numbers[i] for i in sorted(group)[1:])
    return drop


_TALLIES = ("pieces_masked", "rows_added", "languages", "score_histogram", "_score_sum", "mean_score")


def _chunk(op: dict, count: dict, row: dict, tokens) -> list[dict]:
    """A text row as rows of at most ``max_tokens``; the other keys (a ``source``) go with every piece."""
    pieces = text_chunks(row["text"], tokens.text_counter(op["model"]), max_tokens=op["max_tokens"],
                         overlap_tokens=op["overlap_tokens"])
    if not pieces:
        count["rows_removed"] += 1
        return []
    if len(pieces) > 1 or pieces[0] != row["text"]:
        count["rows_changed"] += 1
    count["rows_added"] = count.get("rows_added", 0) + len(pieces) - 1
    return [{**row, "text": piece} for piece in pieces]


def _apply(op: dict, count: dict, row: dict, fmt: str, seen: set, number: int, drop_near: set, tokens):
    name = op["op"]
    if name == "map_columns":
        mapping = op["column_map"]
        renamed = {mapping.get(k, k): v for k, v in row.items()}
        if renamed != row:
            count["rows_changed"] += 1
        new_format = format_detect(renamed) or fmt
        return renamed, new_format
    if name == "convert":
        converted = convert(row, fmt, op["to"])
        if converted is None:
            count["rows_removed"] += 1
            return None, fmt
        count["rows_changed"] += converted != row
        return converted, op["to"]
    if name == "dedup":
        if number in drop_near:
            count["rows_removed"] += 1
            return None, fmt
        digest = row_digest(row)
        if digest in seen:
            count["rows_removed"] += 1
            return None, fmt
        seen.add(digest)
        return row, fmt
    if name == "mask_pii":
        masked, found = row_mask(row, tuple(op["kinds"]))
        if found:
            count["rows_changed"] += 1
            count["pieces_masked"] = count.get("pieces_masked", 0) + found
        return masked, fmt
    if name == "clean":
        cleaned = row_clean(row, unicode=op["unicode"], control_chars=op["control_chars"],
                            whitespace=op["whitespace"], mojibake=op["mojibake"])
        count["rows_changed"] += cleaned != row
        return cleaned, fmt
    if name == "language":
        code, confidence = language_detect(_text(row))
        languages = count.setdefault("languages", {})
        languages[code] = languages.get(code, 0) + 1
        if code not in op["keep"] or confidence < op["min_confidence"]:
            count["rows_removed"] += 1
            return None, fmt
        return row, fmt
    if name == "quality":
        score = row_quality(row, fmt)
        histogram = count.setdefault("score_histogram", [0] * 10)
        histogram[min(int(score * 10), 9)] += 1
        count["_score_sum"] = count.get("_score_sum", 0.0) + score
        if score < op["min_score"]:
            count["rows_removed"] += 1
            return None, fmt
        return row, fmt
    if name == "filter_length":
        if _outside(len(_text(row)), op["min_chars"], op["max_chars"]) or (
                "model" in op and _outside(tokens(op, row, fmt, number), op["min_tokens"], op["max_tokens"])):
            count["rows_removed"] += 1
            return None, fmt
        return row, fmt
    return row, fmt


def _outside(length: int, low: int, high: int | None) -> bool:
    return length < low or (high is not None and length > high)


def convert(row: dict, source: str, target: str) -> dict | None:
    """``row`` of format ``source`` as format ``target``; None when it has no such form (a multi-turn
    conversation has no single prompt/completion)."""
    extra = {"source": row["source"]} if "source" in row else {}
    if source == target:
        return row
    if source == CHAT:
        messages = row["messages"]
        if target == TEXT:
            return {"text": "\n".join(m.get("content") or "" for m in messages), **extra}
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if len(answers) != 1 or answers[0] != len(messages) - 1:
            return None
        prompt = "\n".join(m.get("content") or "" for m in messages[:-1])
        return {"prompt": prompt, "completion": messages[-1].get("content") or "", **extra}
    if source == PROMPT_COMPLETION:
        if target == TEXT:
            return {"text": row["prompt"] + row["completion"], **extra}
        return {"messages": [{"role": "user", "content": row["prompt"]},
                             {"role": "assistant", "content": row["completion"]}], **extra}
    return None  # text has no prompt to split off


def _split_choice(rows, op: dict) -> set[int]:
    """Which kept rows go to validation: seeded, and exact per ``stratify`` value when rows have it."""
    by_source: dict[str, array] = defaultdict(lambda: array("Q"))
    key = op["stratify"]
    for index, row in rows:
        by_source[str(row.get(key, "")) if key else ""].append(index)
    rng = random.Random(op["seed"])
    chosen: set[int] = set()
    for source in sorted(by_source):
        indexes = by_source[source]
        take = round(len(indexes) * op["validation_share"])
        chosen.update(rng.sample(list(indexes), take))
    return chosen
