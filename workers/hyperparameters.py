"""Every training option, declared once.

An option has a name, a kind (range or choices), an "auto" rule, the objectives and adapters it
applies to and one line of help. Everything else is generated from ``OPTIONS``: the fields of
``workers.config.TrainConfig`` and their defaults, the API's validation and "auto" resolution
(``hyperparameters_resolve``), the wizard's fields, the CLI flags (``arguments_add``), the
OpenAPI schema (``hyperparameters_schema``) and the table in the README (``options_markdown``).

To add an option: add an ``Option`` here and use ``config.<name>`` where it takes effect
(usually ``workers/training.py``); then run ``make docs`` to refresh the README's table.

Words mean one thing everywhere: the **objective** is what the model learns from (``supervised``,
``dpo``, ``orpo``, ``kto``, ``reinforcement`` or ``rlaif``; the API's ``method.type``), the **adapter** is which
weights train (``lora``, ``qlora`` or ``full``). The objective ``vision`` trains an image classifier
(``workers.vision``); its **strategy** (``native``, ``transfer``, ``llm_designed``) says how, and adapters
do not apply to it. Options not marked otherwise apply to the text objectives only.
"""

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

AUTO = "auto"
OBJECTIVES = {
    "supervised": "Supervised fine-tuning on chat, prompt/completion or text rows",
    "dpo": "Direct preference optimisation on prompt/chosen/rejected pairs",
    "orpo": "Odds-ratio preference optimisation on prompt/chosen/rejected pairs: learns the chosen answers and "
            "prefers them in one pass, with no reference model",
    "kto": "Kahneman-Tversky optimisation on answers marked good or bad (prompt/completion/label rows), "
           "or on prompt/chosen/rejected pairs",
    "reinforcement": "Online reinforcement learning (GRPO) on prompts: the model samples answers and a grader "
                     "scores them",
    "rlaif": "Reinforcement learning from AI feedback on prompts: the model samples answers, a grader (a judge "
             "model with a written rubric) ranks them, the best and worst of each prompt are stored as a new "
             "preference file, then DPO trains on it",
    "vision": "Image classification on a vision dataset: a strategy (native, transfer or llm_designed) trains a "
              "network on the images",
}
VISION = "vision"
TEXT_OBJECTIVES = tuple(name for name in OBJECTIVES if name != VISION)  # language models
ALL_OBJECTIVES = tuple(OBJECTIVES)
GRADED_OBJECTIVES = ("reinforcement", "rlaif")  # sample answers and grade them
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")  # learn from answers someone judged
ADAPTERS = {
    "lora": "LoRA: small adapter matrices on the frozen base",
    "qlora": "QLoRA: LoRA on a base quantized by bitsandbytes",
    "full": "Full fine-tune: every weight trains",
}
TEMPLATE_LABELS = {"": "the model's own chat template", "chatml": "ChatML", "llama3": "Llama 3",
                   "mistral": "Mistral", "alpaca": "Alpaca",
                   "completion": "completion (turns joined by new lines, no template)"}
SMALL_MODEL = 100_000_000  # parameters: below it, LoRA and full fine-tuning take a larger learning rate
BASE_LEARNING_RATE = {"lora": (1e-3, 2e-4), "qlora": (1e-3, 2e-4), "full": (1e-4, 2e-5)}  # (small, large)
VISION_LEARNING_RATE = 1e-3  # Adam's usual step for a small network trained (or fine-tuned) on images
STRATEGIES = {"native": "native: a CNN trained from scratch",
              "transfer": "transfer: fine-tune a registered backbone",
              "llm_designed": "llm_designed: a network a chat model designs (declarative JSON, checked)"}


class OptionError(ValueError):
    """A value an option refuses; ``name`` is the option."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name} {message}")
        self.name = name
        self.message = f"{name} {message}"


@dataclass(frozen=True)
class Context:
    """What "auto" rules and range checks may look at; None is unknown."""

    objective: str = "supervised"
    parameters: int | None = None  # of the base model
    context_length: int | None = None  # of the base model, tokens
    rows: int | None = None  # of the training file
    has_validation: bool | None = None
    peak_memory_bytes: int | None = None  # the job's memory estimate (the largest peak of past runs), bytes
    device_memory_bytes: int | None = None  # of one training device (a GPU); None on CPU or unknown
    strategy: str | None = None  # vision: the strategy that accepts the dataset first (workers.vision)
    image_side: int | None = None  # vision: the median of the images' shorter sides, pixels


# --- kinds: how a value is checked, parsed from text, documented ------------------------------

@dataclass(frozen=True)
class Int:
    low: int
    high: int

    def problem(self, value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f'must be an integer from {self.low} to {self.high} or "auto"'
        if not self.low <= value <= self.high:
            return f"must be from {self.low} to {self.high}, not {value}"
        return None

    def parse(self, text: str):
        try:
            return int(text)
        except ValueError:
            return text  # the check names what is expected

    def describe(self) -> str:
        return f"integer, {self.low}–{self.high:,}"

    def schema(self) -> dict:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    low_inclusive: bool = False

    def problem(self, value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return 'must be a number or "auto"'
        if value < self.low or (value == self.low and not self.low_inclusive) or value > self.high:
            floor = "at least" if self.low_inclusive else "above"
            return f"must be {floor} {self.low:g} and at most {self.high:g}, not {value:g}"
        return None

    def parse(self, text: str):
        try:
            return float(text)
        except ValueError:
            return text

    def describe(self) -> str:
        return f"number, {'≥' if self.low_inclusive else '>'} {self.low:g} and ≤ {self.high:g}"

    def schema(self) -> dict:
        # OpenAPI 3.0's JSON schema: exclusiveMinimum is a flag on minimum
        return {"type": "number", "minimum": self.low, "exclusiveMinimum": not self.low_inclusive,
                "maximum": self.high}


@dataclass(frozen=True)
class Choice:
    labels: Mapping[str, str]  # value → what a person reads

    def problem(self, value) -> str | None:
        if isinstance(value, str) and value in self.labels:
            return None
        return "must be one of " + ", ".join(f'"{v}"' for v in self.labels) + ' or "auto"'

    def parse(self, text: str):
        return text

    def label(self, value) -> str:
        return self.labels.get(value, str(value))

    def describe(self) -> str:
        return " · ".join(f"`{v}`" if v else '`""`' for v in self.labels)

    def schema(self) -> dict:
        return {"type": "string", "enum": list(self.labels)}


@dataclass(frozen=True)
class Bool(Choice):
    """true or false; typed as the words ``true`` and ``false`` (the keys of ``labels``)."""

    def problem(self, value) -> str | None:
        return None if isinstance(value, bool) else 'must be true, false or "auto"'

    def parse(self, text: str):
        return {"true": True, "false": False}.get(text.lower(), text)

    def label(self, value) -> str:
        return self.labels.get(str(value).lower(), str(value))

    def describe(self) -> str:
        return "`true` · `false`"

    def schema(self) -> dict:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Names:
    """A list of module names, or the one word ``everything``."""

    everything: str

    def problem(self, value) -> str | None:
        if value == [self.everything]:
            return None
        if not isinstance(value, list) or not 0 < len(value) <= 100 or not all(_name_ok(v) for v in value):
            return f'must be "{self.everything}" or a list of 1 to 100 module names (printable, no spaces)'
        return None

    def parse(self, text: str):
        return [part.strip() for part in text.split(",") if part.strip()]

    def describe(self) -> str:
        return f'`"{self.everything}"` or a list of module names'

    def schema(self) -> dict:
        return {"oneOf": [{"type": "string", "enum": [self.everything]},
                          {"type": "array", "items": {"type": "string"}, "minItems": 1}]}


def _name_ok(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable() and " " not in value


Kind = Int | Float | Choice | Bool | Names
Rule = Callable[[Context, dict, Mapping], Any]  # (context, resolved so far, given) → value


@dataclass(frozen=True)
class Option:
    """One training option.

    auto: the value "auto" becomes, a constant or a rule over the context and the options
    resolved before it. auto_doc says the rule in words. objectives/adapters: where it applies;
    elsewhere it is refused when given and left out of the job. engine: a ``TrainConfig``
    field (False for options the platform turns into others before training). fits: a check
    against the context (e.g. the model's context length), returning the problem or None.
    agrees: a check of a given value against the options resolved before it (e.g. ``sharding``
    against ``devices``), returning the problem or None.
    """

    name: str
    kind: Kind
    auto: Any
    auto_doc: str
    label: str
    help: str
    objectives: tuple[str, ...] = TEXT_OBJECTIVES
    adapters: tuple[str, ...] = tuple(ADAPTERS)
    engine: bool = True
    fits: Callable[[Context, Any], str | None] | None = None
    agrees: Callable[[dict, Any], str | None] | None = None

    def applies(self, objective: str, adapter: str) -> bool:
        return objective in self.objectives and adapter in self.adapters

    def auto_value(self, context: Context, resolved: dict, given: Mapping):
        return self.auto(context, resolved, given) if callable(self.auto) else self.auto

    def check(self, value, context: Context = Context()):
        """``value`` normalised, or OptionError naming what is expected."""
        if isinstance(self.kind, Names) and value == self.kind.everything:
            value = [value]
        problem = self.kind.problem(value) or (self.fits(context, value) if self.fits else None)
        if problem:
            raise OptionError(self.name, problem)
        return value

    def parse(self, text: str):
        """The API value for what a person typed: blank or "auto" is "auto"."""
        text = (text or "").strip()
        blank_is_a_value = isinstance(self.kind, Choice) and "" in self.kind.labels  # the model's own template
        if text == AUTO or (text == "" and not blank_is_a_value):
            return AUTO
        return self.kind.parse(text)

    def display(self, value) -> str:
        """The value as a person reads it."""
        if isinstance(self.kind, Choice):
            return self.kind.label(value)
        if isinstance(value, list | tuple):
            return ", ".join(value)
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)


def _learning_rate_base(context: Context, resolved: dict) -> float:
    if context.objective == VISION:
        return VISION_LEARNING_RATE
    small = context.parameters is not None and context.parameters < SMALL_MODEL
    return BASE_LEARNING_RATE[resolved["adapter"]][0 if small else 1]


def _multiplier_auto(context: Context, resolved: dict, given: Mapping) -> float:
    if "learning_rate" in given:  # what the given rate is, against the automatic one
        return float(f"{given['learning_rate'] / _learning_rate_base(context, resolved):.6g}")
    return 1.0


def _within_context(context: Context, value) -> str | None:
    if context.context_length and value > context.context_length:
        return f"{value} is above the model's context of {context.context_length} tokens"
    return None


def _batch_fits(context: Context, value) -> str | None:
    if context.objective == "kto" and value < 2:
        return "must be at least 2 for kto: its reference term compares the answers within a batch"
    return None


def _batch_auto(context: Context, resolved: dict, given: Mapping) -> int:
    if context.objective == VISION:
        return 32
    return max(2 if context.objective == "kto" else 1, min(8, (context.rows or 32) // 4))


def _checkpointing_auto(context: Context, resolved: dict, given: Mapping) -> bool:
    # recomputing activations costs ~25% of a step (on CPU for small models): only to fit
    known = context.peak_memory_bytes and context.device_memory_bytes
    return bool(known and context.peak_memory_bytes > context.device_memory_bytes)


def _padding_free_auto(context: Context, resolved: dict, given: Mapping) -> bool:
    # rows joined into one sequence without padding (~70% more tokens/s on CPU); one row per batch has none
    return resolved["batch_size"] > 1


def _needs_validation(context: Context, value) -> str | None:
    if value and context.has_validation is False:
        return "evaluates on the validation file: give validation_file, or leave it at 0"
    return None


SHARDINGS = {"none": "none (each device holds the whole model)", "fsdp": "FSDP (fully_shard)",
             "zero2": "DeepSpeed ZeRO-2", "zero3": "DeepSpeed ZeRO-3"}
DEEPSPEED_SHARDINGS = ("zero2", "zero3")


def ranks(resolved: Mapping) -> int:
    """The training processes of a job: ``devices`` on each of its ``nodes`` (torchrun's world size)."""
    return resolved.get("devices", 1) * resolved.get("nodes", 1)


def _sharding_auto(context: Context, resolved: dict, given: Mapping) -> str:
    # sharding costs collectives every step: only when the model would not fit one device otherwise
    known = context.peak_memory_bytes and context.device_memory_bytes
    return "fsdp" if ranks(resolved) > 1 and known and context.peak_memory_bytes > context.device_memory_bytes \
        else "none"


def _sharding_fits(context: Context, value) -> str | None:
    import importlib.util

    if value in DEEPSPEED_SHARDINGS and importlib.util.find_spec("deepspeed") is None:
        return (f'"{value}" needs the deepspeed package, which is not installed here; use "fsdp" (it shards the '
                'same way as zero3, with torch alone)')
    return None


def _sharding_agrees(resolved: dict, value) -> str | None:
    if value != "none" and ranks(resolved) == 1:
        return (f'"{value}" splits the model across devices: set devices (or nodes) above 1, or sharding to '
                '"none"')
    return None


def _image_size_auto(context: Context, resolved: dict, given: Mapping) -> int:
    # the images' own scale, as a multiple of 8, kept small enough for a CPU
    side = context.image_side or 64
    return max(16, min(128, -(-side // 8) * 8))


def _only_vision_strategy(*strategies: str) -> Callable[[dict, Any], str | None]:
    def agrees(resolved: dict, value) -> str | None:
        if resolved.get("strategy") in strategies:
            return None
        return f'applies only with strategy {" or ".join(strategies)}, not "{resolved.get("strategy")}"; leave it out'
    return agrees


LORA = ("lora", "qlora")
SWITCH = Bool({"true": "on", "false": "off"})
OPTIONS: tuple[Option, ...] = (
    Option("adapter", Choice({k: v.split(":")[0] for k, v in ADAPTERS.items()}), "lora", '"lora"', "Adapter",
           "Which weights train: LoRA adapters, LoRA on a quantized base, or every weight."),
    Option("quantization", Choice({"nf4": "4-bit NormalFloat (nf4)", "int8": "8-bit (int8)"}), "nf4", '"nf4"',
           "Quantization", "How QLoRA stores the frozen base: 4-bit NF4, double-quantized, or 8-bit.",
           adapters=("qlora",)),
    Option("n_epochs", Int(1, 100), lambda c, r, g: 10 if c.objective == VISION else 3, "3 (vision: 10)",
           "Epochs", "Passes over the training file.", objectives=ALL_OBJECTIVES),
    Option("batch_size", Int(1, 1024), _batch_auto, "rows / 4, from 1 (kto: 2) to 8; vision: 32", "Batch size",
           "Rows per optimizer step on one device (reinforcement: prompts, each sampled num_generations times; "
           "vision: images).", fits=_batch_fits, objectives=ALL_OBJECTIVES),
    Option("gradient_accumulation_steps", Int(1, 1024), 1, "1", "Gradient accumulation",
           "Batches summed into one optimizer step: an effective batch of batch_size × this × devices, in the "
           "memory of one batch."),
    Option("learning_rate_multiplier", Float(0, 100), _multiplier_auto,
           "1, or learning_rate / the automatic rate when learning_rate is given", "Learning-rate multiplier",
           "Scales the automatic learning rate (OpenAI's knob); give it or learning_rate, not both.",
           engine=False, objectives=ALL_OBJECTIVES),
    Option("learning_rate", Float(0, 1),
           lambda c, r, g: float(f"{_learning_rate_base(c, r) * r['learning_rate_multiplier']:.6g}"),
           "by adapter and model size, × the multiplier: LoRA/QLoRA 1e-3 below 100M parameters else 2e-4; "
           "full 1e-4 below 100M else 2e-5; vision 1e-3", "Learning rate",
           "Peak learning rate; it decays linearly to 0 (vision: cosine).", objectives=ALL_OBJECTIVES),
    Option("max_length", Int(16, 1_000_000), lambda c, r, g: min(1024, c.context_length or 1024),
           "the longest row, rounded up to 64 tokens, within the model's context (1024 until the data is "
           "counted)", "Max length", "Tokens per row; longer rows are truncated.", fits=_within_context,
           objectives=("supervised", *PREFERENCE_OBJECTIVES, "rlaif")),
    Option("template", Choice(TEMPLATE_LABELS), "", "the model's own chat template", "Template",
           "How chat rows become tokens; the tuned model's tokenizer carries it.", objectives=("supervised",)),
    Option("lora_r", Int(1, 1024), 16, "16", "LoRA rank", "Rank of the adapter matrices.", adapters=LORA),
    Option("lora_alpha", Int(1, 4096), lambda c, r, g: 2 * r["lora_r"], "2 × lora_r", "LoRA alpha",
           "Scaling numerator of the adapter (scale = alpha / rank).", adapters=LORA),
    Option("lora_dropout", Float(0, 1, low_inclusive=True), 0.0, "0", "LoRA dropout",
           "Dropout on the adapter's input, 0 to 1.", adapters=LORA),
    Option("lora_target_modules", Names("all-linear"), ["all-linear"], '"all-linear"', "LoRA target modules",
           'Modules that get adapters: "all-linear", or names separated by commas.', adapters=LORA),
    Option("beta", Float(0, 10), 0.1, "0.1", "Beta",
           "How far the tuned model may move from the reference (the KL weight).", objectives=("dpo", "kto", "rlaif")),
    Option("odds_ratio_weight", Float(0, 10), 0.1, "0.1", "Odds-ratio weight",
           "Weight of the odds-ratio term that prefers the chosen answer, next to learning it (ORPO's λ).",
           objectives=("orpo",)),
    Option("desirable_weight", Float(0, 100), 1.0, "1", "Desirable weight",
           "Weight of the loss on good answers; raise it when good answers are rarer than bad ones.",
           objectives=("kto",)),
    Option("undesirable_weight", Float(0, 100), 1.0, "1", "Undesirable weight",
           "Weight of the loss on bad answers; raise it when bad answers are rarer than good ones.",
           objectives=("kto",)),
    Option("num_generations", Int(2, 64), 4, "4", "Answers per prompt",
           "Answers sampled per prompt; each is graded against the others of its prompt.",
           objectives=GRADED_OBJECTIVES),
    Option("max_completion_length", Int(1, 100_000), 256, "256", "Max answer length",
           "Tokens sampled per answer; longer answers are cut.", fits=_within_context,
           objectives=GRADED_OBJECTIVES),
    Option("temperature", Float(0, 2), 1.0, "1", "Temperature",
           "Sampling temperature of the answers: higher explores more.", objectives=GRADED_OBJECTIVES),
    Option("gradient_checkpointing", SWITCH, _checkpointing_auto,
           "on only when the memory estimate (the largest peak of past runs) exceeds one device's memory",
           "Gradient checkpointing", "Recomputes activations in the backward pass: less memory, ~25% slower steps."),
    Option("padding_free", SWITCH, _padding_free_auto, "on when batch_size is above 1", "Padding-free batching",
           "Joins a batch's rows into one sequence without padding (each row still attends only to itself).",
           objectives=("supervised",)),
    Option("logging_steps", Int(1, 100_000), 1, "1", "Logging steps", "A metric point every N optimizer steps."),
    Option("save_steps", Int(0, 1_000_000), 0, "0", "Save steps",
           "A checkpoint every N steps; 0 = one at the end of each epoch.", objectives=ALL_OBJECTIVES),
    Option("eval_steps", Int(0, 1_000_000), 0, "0", "Eval steps",
           "Loss on the validation file every N steps; 0 = at the end of each epoch.", fits=_needs_validation),
    Option("devices", Int(1, 64), 1, "1", "Devices",
           "Training processes: one per GPU, or CPU processes over gloo (torchrun)."),
    Option("nodes", Int(1, 16), 1, "1", "Nodes",
           "Machines one job spans, each running `devices` processes; their ranks meet through torchrun's c10d "
           "rendezvous. Above 1 the job waits, in the queue's order, until that many training workers are free at "
           "once."),
    Option("sharding", Choice(SHARDINGS), _sharding_auto,
           '"fsdp" when devices × nodes is above 1 and the memory estimate (the largest peak of past runs) exceeds '
           'one device\'s memory, else "none"', "Sharding",
           "How the job's devices (on all its nodes) split the weights, gradients and optimizer state: none (each "
           "holds all), FSDP (torch's fully_shard; CPU over gloo too), DeepSpeed ZeRO-2 or ZeRO-3 (with the "
           "deepspeed package; CPU over gloo too; refused where it is not installed). Over several nodes each "
           "node stores its ranks' part of every checkpoint. QLoRA's quantized base is not sharded.",
           adapters=("lora", "full"), fits=_sharding_fits, agrees=_sharding_agrees),
    # --- vision (workers.vision): not TrainConfig fields (engine=False); VisionConfig is made of them ---
    Option("strategy", Choice(STRATEGIES), lambda c, r, g: c.strategy or "native",
           "the first strategy that accepts the dataset and model, in the order transfer (model: a registered "
           "backbone), native (model: cnn), llm_designed (model: cnn, with a designer)", "Strategy",
           "How the image classifier is made: a CNN from scratch, a fine-tuned backbone, or a design a chat "
           "model proposes.", objectives=(VISION,), engine=False),
    Option("optimizer", Choice({"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (momentum 0.9)",
                                "rmsprop": "RMSprop"}), "adam", '"adam"', "Optimizer",
           "The optimizer of the network's weights.", objectives=(VISION,), engine=False),
    Option("weight_decay", Float(0, 1, low_inclusive=True), lambda c, r, g: 0.01 if r["optimizer"] == "adamw"
           else 0.0, "0.01 with adamw, else 0", "Weight decay", "L2 penalty (AdamW: decoupled).",
           objectives=(VISION,), engine=False),
    Option("dropout", Float(0, 1, low_inclusive=True), 0.2, "0.2", "Dropout",
           "Dropout before the classifier (native: half of it after each block too), 0 to 1.", objectives=(VISION,),
           engine=False),
    Option("image_size", Int(8, 512), _image_size_auto,
           "the median shorter side of the images, rounded up to 8, from 16 to 128", "Image size",
           "Side in pixels every image is resized to (squared) before it enters the network.",
           objectives=(VISION,), engine=False),
    Option("augmentation", Choice({"none": "none", "flip": "horizontal flips",
                                   "standard": "flips, shifts and colour jitter"}), "flip", '"flip"',
           "Augmentation", "Random changes to the training images each epoch (never to validation).",
           objectives=(VISION,), engine=False),
    Option("early_stopping_patience", Int(0, 100), 3, "3", "Early stopping",
           "Stop after this many epochs without a better validation loss, and keep the best epoch's weights; "
           "0 = off.", objectives=(VISION,), engine=False),
    Option("validation_share", Float(0, 0.5, low_inclusive=True), 0.15, "0.15", "Validation share",
           "Share of each class held out for validation when the dataset has no split of its own.",
           objectives=(VISION,), engine=False),
    Option("depth", Int(1, 8), 3, "3", "Depth", "Native: convolution blocks (each halves the image).",
           objectives=(VISION,), engine=False, agrees=_only_vision_strategy("native")),
    Option("width", Int(4, 512), 32, "32", "Width", "Native: channels of the first block; each next block doubles "
           "them.", objectives=(VISION,), engine=False, agrees=_only_vision_strategy("native")),
    Option("freeze_epochs", Int(0, 100), 1, "1", "Frozen epochs",
           "Transfer: epochs that train only the new classifier before the whole backbone unfreezes.",
           objectives=(VISION,), engine=False, agrees=_only_vision_strategy("transfer")),
    Option("design_attempts", Int(1, 10), 3, "3", "Design attempts",
           "LLM-designed: proposals asked for at most; each refused one is asked again with the reason.",
           objectives=(VISION,), engine=False, agrees=_only_vision_strategy("llm_designed")),
    Option("max_parameters", Int(1_000, 100_000_000), 2_000_000, "2,000,000", "Parameter budget",
           "LLM-designed: the most weights a proposed network may have.", objectives=(VISION,), engine=False,
           agrees=_only_vision_strategy("llm_designed")),
    Option("max_mflops", Int(1, 100_000), 200, "200", "FLOP budget",
           "LLM-designed: the most multiply-adds (millions) one image may cost.", objectives=(VISION,),
           engine=False, agrees=_only_vision_strategy("llm_designed")),
    Option("timeout", Int(0, 30 * 86_400), 0, "0 (no limit)", "Timeout",
           "Wall-clock seconds the job may run from its start (pauses and retries included); past it the job "
           "fails with error code timeout. 0: no limit.", engine=False),
)
BY_NAME = {option.name: option for option in OPTIONS}
OPENAI_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")  # what OpenAI's job object shows


def hyperparameters_resolve(given: Mapping | None, context: Context = Context()) -> dict:
    """Every option that applies to the objective and adapter, checked, with "auto" resolved.

    ``auto_resolved`` lists the options that were not given. Raises ``OptionError`` for an
    unknown option, a bad value, an option given where it does not apply, or learning_rate
    next to learning_rate_multiplier.
    """
    given = {name: value for name, value in dict(given or {}).items() if value != AUTO}
    _unknown_check(given)
    if "learning_rate" in given and "learning_rate_multiplier" in given:
        raise OptionError("learning_rate", "and learning_rate_multiplier both set the learning rate; give one")
    checked = {name: BY_NAME[name].check(value, context) for name, value in given.items()}
    adapter = checked.get("adapter", BY_NAME["adapter"].auto)
    if "adapter" in checked and not BY_NAME["adapter"].applies(context.objective, adapter):
        raise OptionError("adapter", _where(BY_NAME["adapter"], context.objective))
    resolved: dict = {"adapter": adapter}
    for option in OPTIONS[1:]:
        applies = option.applies(context.objective, adapter)
        if option.name in checked and not applies:
            raise OptionError(option.name, _where(option, context.objective))
        if applies and option.name in checked and option.agrees:
            problem = option.agrees(resolved, checked[option.name])
            if problem:
                raise OptionError(option.name, problem)
        if applies:
            value = checked[option.name] if option.name in checked else option.auto_value(context, resolved, checked)
            resolved[option.name] = value
    if not BY_NAME["adapter"].applies(context.objective, adapter):
        del resolved["adapter"]  # vision: no adapter; its rules above still read the default
    if context.objective == VISION:  # a strategy's own options, for the strategy chosen only
        resolved = {name: value for name, value in resolved.items()
                    if name in checked or not (BY_NAME[name].agrees and BY_NAME[name].agrees(resolved, value))}
    resolved["auto_resolved"] = sorted(name for name in resolved if name not in checked)
    return resolved


def _unknown_check(given: Mapping) -> None:
    unknown = sorted(set(given) - set(BY_NAME))
    if unknown:
        raise OptionError(unknown[0], "is not a hyperparameter; known: " + ", ".join(BY_NAME))


def _where(option: Option, objective: str) -> str:
    parts = []
    if objective not in option.objectives:
        parts.append("objective " + " or ".join(option.objectives))
    if option.adapters != tuple(ADAPTERS):
        parts.append("adapter " + " or ".join(option.adapters))
    return "applies only with " + " and ".join(parts) + "; leave it out"


def option_problem(name: str, value, context: Context = Context()) -> str:
    """One option's own problem ("" when fine), as the wizard shows it next to the field."""
    if value == AUTO:
        return ""
    try:
        BY_NAME[name].check(value, context)
    except OptionError as error:
        return error.message
    return ""


def engine_defaults() -> dict:
    """The value of every engine option when nothing is known: ``TrainConfig``'s defaults."""
    resolved: dict = {}
    for option in OPTIONS:
        resolved[option.name] = option.auto_value(Context(), resolved, {})
    return {option.name: resolved[option.name] for option in OPTIONS if option.engine}


def options_complete(stored: Mapping) -> dict:
    """A job's stored options with the engine defaults for those that do not apply to it."""
    return {**engine_defaults(), **{name: stored[name] for name in stored if name in BY_NAME and BY_NAME[name].engine}}


def options_applying(objective: str, adapter: str = "lora") -> list[Option]:
    """The options of ``objective`` (with ``adapter``; vision has none, and the default passes)."""
    return [option for option in OPTIONS if option.applies(objective, adapter)]


# --- generated views of the spec: OpenAPI, CLI, docs --------------------------------------------

def hyperparameters_schema(objective: str) -> dict:
    """The JSON schema of ``method.<objective>.hyperparameters``."""
    properties = {}
    for option in OPTIONS:
        if objective in option.objectives:
            properties[option.name] = {
                "description": f"{option.help} Auto: {option.auto_doc}.{_applies_note(option)}",
                "oneOf": [option.kind.schema(), {"type": "string", "enum": [AUTO]}]}
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _applies_note(option: Option) -> str:
    return "" if option.adapters == tuple(ADAPTERS) else " Adapter " + "/".join(option.adapters) + " only."


def arguments_add(parser: argparse.ArgumentParser) -> None:
    """One ``--name`` flag per option (blank or "auto" leaves it to the rule)."""
    group = parser.add_argument_group("hyperparameters (default: auto)")
    for option in OPTIONS:
        choices = list(option.kind.labels) + [AUTO] if isinstance(option.kind, Choice) else None
        group.add_argument("--" + option.name.replace("_", "-"), dest=option.name, choices=choices,
                           metavar=None if choices else option.name.upper(),
                           help=f"{option.help} Auto: {option.auto_doc}.{_applies_note(option)}")


def arguments_read(values: Mapping) -> dict:
    """The options set on the command line, parsed as the API receives them."""
    return {name: BY_NAME[name].parse(str(values[name])) for name in BY_NAME if values.get(name) is not None}


def options_markdown() -> str:
    """The README's table of options."""
    lines = ["| option | applies to | values | auto | what it does |", "| --- | --- | --- | --- | --- |"]
    for option in OPTIONS:
        where = ", ".join(filter(None, [
            "text" if option.objectives == TEXT_OBJECTIVES else
            "/".join(option.objectives) if option.objectives != ALL_OBJECTIVES else "",
            "/".join(option.adapters) if option.adapters != tuple(ADAPTERS) else ""])) or "all"
        lines.append(f"| `{option.name}` | {where} | {option.kind.describe()} | {option.auto_doc} | {option.help} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_markdown(), end="")
