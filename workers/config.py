"""One frozen config per kind of run. Every field says its unit and default."""

from dataclasses import dataclass
from enum import StrEnum

from workers.templates import TEMPLATE_NAMES

METHODS = ("lora", "qlora", "full")
OBJECTIVES = ("sft", "dpo")
QUANTIZATIONS = ("nf4", "int8")


class Stop(StrEnum):
    """What ``should_stop`` asks for: go on, stop and discard, or stop after a checkpoint."""

    NO = ""
    DISCARD = "discard"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Supervised fine-tuning of a causal language model.

    model_path: local directory or hub id of the base model (no default).
    train_file: local JSONL file of chat or prompt/completion rows (no default).
    output_dir: local directory for checkpoints and the final adapter (no default).
    validation_file: local JSONL file evaluated at the end of each epoch; default none.
    method: "lora" (adapter only), "qlora" (adapter on a quantized base) or "full"; default "lora".
    quantization: for qlora, "nf4" (4-bit NormalFloat) or "int8" (8-bit); default "nf4".
    objective: "sft" (supervised, on chat/prompt-completion/text rows) or "dpo" (direct preference
        optimisation, on prompt/chosen/rejected rows); default "sft".
    beta: for dpo, how far the tuned model may move from the reference (KL weight); default 0.1.
    n_epochs: passes over the training file; default 3.
    batch_size: rows per optimizer step on one device; default 8.
    learning_rate: peak learning rate, linear decay to 0; default 2e-4.
    max_length: tokens per row, longer rows are truncated; default 1024.
    template: how chat rows become tokens: "" (the model's own chat template), "chatml", "llama3",
        "mistral", "alpaca" (set on the tokenizer; loss on the assistant's turns) or "completion"
        (the turns joined by new lines, trained as prompt/completion); the saved tokenizer carries
        it. Rows are tokenized exactly as ``workers.templates.render`` shows them; default "".
    lora_r: LoRA rank; default 16.
    lora_alpha: LoRA scaling numerator (scale = alpha / r); default 32.
    lora_dropout: dropout on the LoRA input, 0..1; default 0.0.
    lora_target_modules: module names to adapt, or ("all-linear",); default ("all-linear",).
    seed: seed for initialisation and data order; default 42.
    logging_steps: report metrics every N optimizer steps; default 1.
    save_steps: write a checkpoint every N steps, 0 = at the end of each epoch; default 0.
    eval_steps: evaluate on validation_file every N steps, 0 = at the end of each epoch; default 0.
    resume_from: checkpoint directory to continue from; default none.
    """

    model_path: str
    train_file: str
    output_dir: str
    validation_file: str | None = None
    method: str = "lora"
    quantization: str = "nf4"
    objective: str = "sft"
    beta: float = 0.1
    n_epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 2e-4
    max_length: int = 1024
    template: str = ""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 0
    eval_steps: int = 0
    resume_from: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {self.objective!r}")
        if self.template not in TEMPLATE_NAMES:
            raise ValueError(f"template must be one of {TEMPLATE_NAMES}, not {self.template!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {self.quantization!r}")
        for name in ("n_epochs", "batch_size", "max_length", "lora_r", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run produced.

    adapter_dir: directory holding the adapter (LoRA) or the full model; "" when stopped.
    steps / total_steps: optimizer steps done / planned.
    trained_tokens: non-padding tokens seen by the model.
    train_loss: mean training loss over the run.
    wall_seconds / tokens_per_second: time spent in the training loop and throughput.
    stopped: True when ``should_stop`` ended the run early.
    stop: the kind of stop asked for (Stop.NO when the run finished).
    peak_memory_bytes: peak accelerator memory on a GPU, peak resident memory on CPU.
    """

    adapter_dir: str
    steps: int
    total_steps: int
    trained_tokens: int
    train_loss: float
    wall_seconds: float
    tokens_per_second: float
    stopped: bool
    stop: Stop = Stop.NO
    peak_memory_bytes: int = 0
