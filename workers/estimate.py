"""Estimates before a run: tokens and steps from the data, time and memory from a measurement."""

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workers.config import TrainConfig
from workers.events import emit_nothing
from workers.formats import CHAT, PREFERENCE, PROMPT_ONLY, UNPAIRED, field_text, format_detect, jsonl_rows
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
    """How fast one model and adapter train on one kind of device, measured.

    tokens_per_second: training steps alone. peak_memory_bytes: the largest seen. setup_seconds:
    loading and tokenizing before the first step. eval_tokens_per_second: a pass over the
    validation file (None: unknown, taken as 3× the training speed: a forward pass without the
    backward). save_seconds: one checkpoint. step_seconds: one training step (0: unknown), the
    pace when tokens do not give one (none counted, or a schedule ``by_steps``).
    """

    tokens_per_second: float
    peak_memory_bytes: int
    setup_seconds: float = 0.0
    eval_tokens_per_second: float | None = None
    save_seconds: float = 0.0
    step_seconds: float = 0.0

    def __bool__(self) -> bool:  # a measurement without a pace estimates nothing
        return bool(self.tokens_per_second or self.step_seconds)


@dataclass(frozen=True)
class Estimate:
    """The whole run: tokens over all epochs, optimizer steps, peak bytes, and seconds by part
    (``setup``, ``training``, ``validation`` passes, ``checkpoints``); ``seconds`` is their sum."""

    tokens: int
    steps: int
    seconds: float
    peak_memory_bytes: int
    parts: dict


@dataclass(frozen=True)
class Schedule:
    """What a run will do besides its steps: validation passes and checkpoints (trainer settings)."""

    n_epochs: int
    batch_size: int
    eval_steps: int = 0  # 0: a pass at the end of each epoch
    save_steps: int = 0  # 0: a checkpoint at the end of each epoch
    validation_tokens: int = 0  # per pass; 0: no validation file
    # reinforcement: a step's time goes to sampling answers (num_generations per prompt, up to
    # max_completion_length tokens), not to the prompt's tokens, so steps set the pace
    by_steps: bool = False
    gradient_accumulation_steps: int = 1  # batches per optimizer step

    def steps(self, rows: int) -> int:
        """Optimizer steps, as the Trainer counts them: an epoch's last batches step even when fewer
        than ``gradient_accumulation_steps`` are left."""
        return math.ceil(math.ceil(rows / self.batch_size) / self.gradient_accumulation_steps) * self.n_epochs

    def evals(self, steps: int) -> int:
        """Validation passes: every ``eval_steps`` and one after the last step when it is off the beat
        (the Trainer's rule), or one an epoch."""
        if not self.validation_tokens:
            return 0
        return math.ceil(steps / self.eval_steps) if self.eval_steps else self.n_epochs

    def saves(self, steps: int) -> int:
        """Checkpoints, counted as ``evals`` counts passes."""
        return math.ceil(steps / self.save_steps) if self.save_steps else self.n_epochs


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
        prompt, chosen, rejected = (field_text(row.get(key, "")) for key in ("prompt", "chosen", "rejected"))
        ids = [tokenizer(prompt + answer)["input_ids"] for answer in (chosen, rejected)]
        answers = [len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in (chosen, rejected)]
        return ids[0] + ids[1], [0] * (len(ids[0]) + len(ids[1]) - sum(answers)) + [1] * sum(answers)
    if fmt in (UNPAIRED, PROMPT_ONLY):  # the prompt, and the one answer scored (sampled: not known before)
        prompt = field_text(row.get("prompt", "") if fmt == UNPAIRED else row["messages"])
        ids = tokenizer(prompt + field_text(row.get("completion", "")))["input_ids"]
        answer = len(ids) - len(tokenizer(prompt)["input_ids"])
        return ids, [0] * (len(ids) - answer) + [1] * answer
    if fmt == CHAT:
        row = {"messages": [{"role": m["role"], "content": m.get("content") or ""} for m in row["messages"]]}
    rendered = render(tokenizer, row, fmt, template=template, max_length=1 << 30)
    return rendered.ids, rendered.loss_mask


def calibrate(config: TrainConfig, steps: int = 4) -> Throughput:
    """Train ``steps`` steps (one epoch of the first rows of the data), scored on the same rows and
    saved once, and measure each: the step pace after the first, setup, a pass, a checkpoint, memory."""
    import json

    from workers.training import run_training

    rows = steps * config.batch_size * config.gradient_accumulation_steps
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        sample = Path(tmp) / "sample.jsonl"
        with open(sample, "w") as handle:
            for index, row in enumerate(jsonl_rows(config.train_file)):
                if index >= rows:
                    break
                handle.write(json.dumps(row) + "\n")
        probe = TrainConfig(**{**config.__dict__, "train_file": str(sample), "output_dir": tmp, "n_epochs": 1,
                               "validation_file": str(sample), "save_steps": 0, "eval_steps": 0,
                               "resume_from": None, "devices": 1, "nodes": 1, "sharding": "none",
                               "trackers": ""})  # a probe, not the run: the trackers never see it
        result = run_training(probe, emit_nothing)
    return throughput_of(result, eval_tokens=result.trained_tokens)


def throughput_of(result, *, eval_tokens: int) -> Throughput:
    """The paces a finished run measured (``TrainResult``), ``eval_tokens`` scored per validation pass."""
    return Throughput(
        tokens_per_second=result.step_tokens_per_second or result.tokens_per_second,
        peak_memory_bytes=result.peak_memory_bytes, setup_seconds=result.setup_seconds,
        eval_tokens_per_second=eval_tokens * result.evals / result.eval_seconds if result.eval_seconds else None,
        save_seconds=result.save_seconds / result.saves if result.saves else 0.0, step_seconds=result.step_seconds)


def estimate(counts: TokenCounts, throughput: Throughput, schedule: Schedule) -> Estimate:
    """Combine what the data needs with how fast this model trains, part by part: the training steps
    at the measured token pace, or at the measured step pace where tokens do not set it (a schedule
    ``by_steps``, or a run that counted no tokens). ValueError for a throughput with neither pace."""
    tokens = counts.tokens * schedule.n_epochs
    steps = schedule.steps(counts.rows)
    if not throughput:
        raise ValueError("the throughput has no pace: neither tokens per second nor seconds per step")
    by_steps = throughput.step_seconds and (schedule.by_steps or not throughput.tokens_per_second)
    training = steps * throughput.step_seconds if by_steps else tokens / throughput.tokens_per_second
    # a validation pass is forward only: ~3× the training pace, in tokens or per step's worth of rows
    eval_speed = throughput.eval_tokens_per_second or 3 * (tokens / training if training else 0) or 1.0
    parts = {"setup": throughput.setup_seconds, "training": training,
             "validation": schedule.evals(steps) * schedule.validation_tokens / eval_speed,
             "checkpoints": schedule.saves(steps) * throughput.save_seconds}
    parts = {name: round(seconds, 1) for name, seconds in parts.items()}
    return Estimate(tokens=tokens, steps=steps, seconds=round(sum(parts.values()), 1),
                    peak_memory_bytes=throughput.peak_memory_bytes, parts=parts)


def evaluation_pace(model_path: str, data_file: str, *, max_new_tokens: int, rows: int = 3) -> tuple[float, float]:
    """(seconds to load a target, seconds per row), from scoring the first ``rows`` rows of
    ``data_file`` with the base model exactly as an evaluation does (loss pass and greedy answer)."""
    from workers.evaluation import EvalConfig, EvalTarget, run_evaluation
    from workers.events import Progress

    ended: list[float] = []

    def emit(event) -> None:
        if isinstance(event, Progress):
            ended.append(time.perf_counter())

    started = time.perf_counter()
    run_evaluation(EvalConfig(base_model_path=model_path, data_file=data_file, targets=(EvalTarget("base"),),
                              max_rows=rows, max_new_tokens=max_new_tokens), emit)
    if len(ended) < 2:
        return ended[0] - started if ended else 0.0, 0.0
    row = (ended[-1] - ended[0]) / (len(ended) - 1)
    return max(0.0, ended[0] - started - row), row


@dataclass(frozen=True)
class Shape:
    """What a model's training memory depends on besides its parameter count (from config.json)."""

    hidden_size: int
    layers: int
    intermediate_size: int
    vocab_size: int


GIB = 2**30
# Bytes a weight takes: QLoRA's NF4 with its double-quantized scales, int8, half precision, fp32.
WEIGHT_BYTES = {"nf4": 0.5625, "int8": 1.0, "half": 2.0, "fp32": 4.0}
# Training a CUDA model reserves more than its tensors: the CUDA context, the allocator's caching
# and fragmentation. A rule of thumb, not a measurement.
CUDA_OVERHEAD_BYTES, CUDA_OVERHEAD_SHARE = GIB // 2, 0.10


def lora_parameters(shape: Shape, lora_r: int) -> int:
    """LoRA's trainable parameters on every linear layer ("all-linear"): rank x (in + out) of each, the
    key and value projections taken as wide as the hidden size (an upper bound)."""
    return lora_r * shape.layers * (11 * shape.hidden_size + 3 * shape.intermediate_size)


def memory_need(*, parameters: int, shape: Shape, adapter: str, quantization: str, batch_size: int,
                max_length: int, checkpointing: bool, half_precision: bool, lora_r: int = 16, shards: int = 1,
                device: str = "cuda") -> int:
    """Bytes one device needs to train. On a GPU: weights, gradients and AdamW's two moments of what
    trains (split over ``shards`` ranks when sharded), activations of a batch of ``batch_size`` rows of
    ``max_length`` tokens (per layer unless ``checkpointing`` keeps only each layer's input), the logits,
    and the CUDA overhead; an upper bound in the manner of the usual rules (weights x 4 for full AdamW,
    ~10h+4i stored values per token and layer): it decides whether to refuse, never a measured figure.
    On CPU (``device="cpu"``): ``cpu_memory_need``, fitted to measured runs."""
    if device == "cpu":
        return cpu_memory_need(parameters=parameters, shape=shape, adapter=adapter, batch_size=batch_size,
                               max_length=max_length, checkpointing=checkpointing, lora_r=lora_r, shards=shards)
    weight = WEIGHT_BYTES[quantization if adapter == "qlora" else "half" if half_precision else "fp32"]
    value = 2.0 if half_precision else 4.0
    if adapter == "full":
        states = parameters * value * 4  # weights, gradients, two moments
    else:
        # the adapters stay fp32: their weights, gradients and two moments
        states = parameters * weight + lora_parameters(shape, lora_r) * 4 * 4
    tokens = batch_size * max_length
    per_layer = shape.hidden_size * 10 + shape.intermediate_size * 4
    if checkpointing:
        activations = tokens * value * (shape.layers * shape.hidden_size + per_layer)
    else:
        activations = tokens * value * shape.layers * per_layer
    logits = tokens * shape.vocab_size * 4 * 3  # fp32 logits, their gradient and the loss's softmax
    need = states / shards + activations + logits
    return int(need * (1 + CUDA_OVERHEAD_SHARE) + CUDA_OVERHEAD_BYTES)


# What a CPU run (fp32, torch's AdamW, SDPA attention, TRL's trainer) adds to a worker's process at its
# peak, fitted to the runs of benchmarks/memory_estimate.py (peak RSS growth; see there and the README):
# fp32 values per token of a batch. They are several times what autograd must keep (~10h+4i per layer):
# the CPU allocator keeps freed blocks, and TRL's loss and metrics work per token too.
CPU_LAYER_VALUES = 10.5  # per token and decoder layer, x intermediate_size
CPU_LORA_VALUES = 18.0  # LoRA adds, per token and layer, x hidden_size (its adapters' inputs and outputs)
CPU_CHECKPOINT_VALUES = 16.0  # with gradient checkpointing: per token and layer, x hidden_size (+ one layer)
CPU_LOGIT_VALUES = 7.5  # per token, x vocab_size: the logits, their softmax and gradients
CPU_TOKEN_VALUES = 14_500  # per token, whatever the model: the rows, the batch and the trainer's bookkeeping


def cpu_memory_need(*, parameters: int, shape: Shape, adapter: str, batch_size: int, max_length: int,
                    checkpointing: bool, lora_r: int = 16, shards: int = 1) -> int:
    """Bytes a CPU run adds to its process at its peak (the process's RSS growth once the libraries are
    imported): fp32 weights, and the gradients and AdamW's two moments of what trains (split over
    ``shards``), and what a step of ``batch_size`` x ``max_length`` tokens holds (per layer, or with
    ``checkpointing`` each layer's kept input and one layer; the logits; a part per token). No
    quantization on CPU: QLoRA counts as LoRA."""
    trained = parameters if adapter == "full" else lora_parameters(shape, lora_r)
    states = (parameters + trained * (3 if adapter == "full" else 4)) * 4 / shards
    per_layer = CPU_LAYER_VALUES * shape.intermediate_size + (adapter != "full") * CPU_LORA_VALUES * shape.hidden_size
    if checkpointing:
        layers = CPU_CHECKPOINT_VALUES * shape.layers * shape.hidden_size + per_layer
    else:
        layers = shape.layers * per_layer
    per_token = layers + CPU_LOGIT_VALUES * shape.vocab_size + CPU_TOKEN_VALUES
    return int(states + batch_size * max_length * per_token * 4)


# Before any run of a model measured it: saving the weights, storing and registering them.
FINISHING_BASE_SECONDS, FINISHING_BYTES_PER_SECOND = 0.1, 100e6


def finishing_seconds(*, parameters: int, shape: Shape | None, adapter: str, lora_r: int = 16) -> float:
    """A prior for the time after the last step: a fixed part, and the bytes the run saves (the whole
    model in fp32 for full fine-tuning, the adapter otherwise) at a disk-and-storage pace."""
    if adapter == "full":
        saved = parameters * 4
    elif shape is not None:
        saved = lora_parameters(shape, lora_r) * 4
    else:
        saved = parameters * 0.01 * 4  # adapters are ~1% of a model
    return FINISHING_BASE_SECONDS + saved / FINISHING_BYTES_PER_SECOND
