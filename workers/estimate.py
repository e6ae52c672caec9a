"""Estimates before a run: tokens and steps from the data, time and memory from a measurement."""

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workers.config import TrainConfig
from workers.events import emit_nothing
from workers.formats import CHAT, PREFERENCE, format_detect, jsonl_rows
from workers.loading import tokenizer_load
from workers.templates import render


@dataclass(frozen=True)
class TokenCounts:
    """Per epoch: ``tokens`` the model reads (after truncation), ``trainable`` ones carrying loss."""

    rows: int
    tokens: int
    trainable: int
    truncated_rows: int


@dataclass(frozen=True)
class Throughput:
    """Measured training speed (tokens/s) and peak memory (bytes) of one model/method/device."""

    tokens_per_second: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class Estimate:
    """The whole run: tokens over all epochs, optimizer steps, seconds of training, peak bytes."""

    tokens: int
    steps: int
    seconds: float
    peak_memory_bytes: int


def token_counts(model_path: str, train_file: str, max_length: int, template: str = "") -> TokenCounts:
    """Tokenize every row as the trainer will (``template``, truncation at ``max_length``)."""
    tokenizer = tokenizer_load(model_path, template=template)
    rows = tokens = trainable = truncated = 0
    for row in jsonl_rows(train_file):
        ids, mask = _encode(tokenizer, row, template)
        rows += 1
        truncated += len(ids) > max_length
        tokens += min(len(ids), max_length)
        trainable += sum(mask[:max_length])
    return TokenCounts(rows=rows, tokens=tokens, trainable=trainable, truncated_rows=truncated)


def _encode(tokenizer, row: dict, template: str) -> tuple[list[int], list[int]]:
    fmt = format_detect(row)
    if fmt == PREFERENCE:  # the prompt is read twice, both answers are scored
        prompt, chosen, rejected = (_text(row.get(key, "")) for key in ("prompt", "chosen", "rejected"))
        ids = [tokenizer(prompt + answer)["input_ids"] for answer in (chosen, rejected)]
        answers = [len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in (chosen, rejected)]
        return ids[0] + ids[1], [0] * (len(ids[0]) + len(ids[1]) - sum(answers)) + [1] * sum(answers)
    if fmt == CHAT:
        row = {"messages": [{"role": m["role"], "content": m.get("content") or ""} for m in row["messages"]]}
    rendered = render(tokenizer, row, fmt, template=template, max_length=1 << 30)
    return rendered.ids, rendered.loss_mask


def _text(value) -> str:
    """A preference field as text: a string, or the contents of a list of messages."""
    if isinstance(value, list):
        return "\n".join(m.get("content") or "" for m in value if isinstance(m, dict))
    return value or ""


def calibrate(config: TrainConfig, rows: int = 16) -> Throughput:
    """Train a few steps on the first ``rows`` rows of the data and measure speed and memory."""
    import json

    from workers.training import run_training

    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        sample = Path(tmp) / "sample.jsonl"
        with open(sample, "w") as handle:
            for index, row in enumerate(jsonl_rows(config.train_file)):
                if index >= rows:
                    break
                handle.write(json.dumps(row) + "\n")
        probe = TrainConfig(**{**config.__dict__, "train_file": str(sample), "output_dir": tmp, "n_epochs": 1,
                               "validation_file": None, "save_steps": 1_000_000, "resume_from": None})
        started = time.perf_counter()
        result = run_training(probe, emit_nothing)
        seconds = result.wall_seconds or (time.perf_counter() - started)
    return Throughput(tokens_per_second=result.trained_tokens / seconds if seconds else 0.0,
                      peak_memory_bytes=result.peak_memory_bytes)


def estimate(counts: TokenCounts, throughput: Throughput, *, n_epochs: int, batch_size: int) -> Estimate:
    """Combine what the data needs with how fast this model trains."""
    tokens = counts.tokens * n_epochs
    speed = throughput.tokens_per_second or 1.0
    return Estimate(tokens=tokens, steps=math.ceil(counts.rows / batch_size) * n_epochs,
                    seconds=round(tokens / speed, 1), peak_memory_bytes=throughput.peak_memory_bytes)
