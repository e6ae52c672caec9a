"""One frozen config per kind of run. Every field says its unit and default."""

from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from typing import Any

from workers.hyperparameters import BY_NAME, GRADED_OBJECTIVES, OPTIONS, TEXT_OBJECTIVES, OptionError, engine_defaults


class Stop(StrEnum):
    """What ``should_stop`` asks for: go on, stop and discard, or stop after a checkpoint."""

    NO = ""
    DISCARD = "discard"
    CHECKPOINT = "checkpoint"


# The fields of a run that are not training options: where things are, and what is learned.
RUN_FIELDS = (
    ("model_path", str, "local directory or hub id of the base model (no default)"),
    ("train_file", str, "local JSONL file of training rows (no default)"),
    ("output_dir", str, "local directory for checkpoints and the final adapter or model (no default)"),
    ("validation_file", str | None, "local JSONL file scored during training; default none", None),
    ("objective", str, 'what the model learns from: "supervised" (chat, prompt/completion or text rows), '
                       '"dpo" or "orpo" (prompt/chosen/rejected pairs), "kto" (prompt/completion/label rows or '
                       'pairs), "reinforcement" (prompts, graded) or "rlaif" (prompts, ranked by the grader, '
                       'then DPO); default "supervised"', "supervised"),
    ("grader", str, 'the grader of "reinforcement" and "rlaif" as JSON text (``workers.graders``); default "" (none)',
     ""),
    ("judges", str, 'the local files of the judge models a score_model grader names, as JSON text: '
                    '{"<name>": ["<base model dir>", "<adapter or full model dir>" or null]}; default "" (none)', ""),
    ("trackers", str, 'the experiment trackers to report to as JSON text (``workers.tracking``): [{"type": '
                      '"tensorboard", "dir": ...}, {"type": "mlflow", "tracking_uri": ..., "experiment": ...}, '
                      '{"type": "wandb", "project": ..., "dir": ..., "mode": "offline"}]; default "" (none)', ""),
    ("run_name", str, 'the run\'s name in the trackers; default "" (the output directory)', ""),
    ("seed", int, "seed for initialisation and data order; default 42", 42),
    ("stream_rows", int, "the rows of train_file, as validation counted them; given (> 0), training streams them "
                         "from the file (read, shuffled within a buffer and tokenized as the steps need them) instead "
                         "of loading them all into memory, for every text objective (rlaif: its prompts are read one "
                         "at a time and its DPO streams the pairs); default 0 (load them)", 0),
    ("resume_from", str | None, "checkpoint directory to continue from; default none", None),
)


def _post_init(self) -> None:
    if self.objective not in TEXT_OBJECTIVES:  # vision trains through workers.vision (VisionConfig)
        raise ValueError(f"objective must be one of {', '.join(TEXT_OBJECTIVES)}, not {self.objective!r}")
    if (self.objective in GRADED_OBJECTIVES) != bool(self.grader):
        raise ValueError('a grader goes with the objectives "reinforcement" and "rlaif", and only with them')
    if self.judges and not self.grader:
        raise ValueError("judges go with a grader that names them")
    for option in OPTIONS:
        if option.engine:
            value = getattr(self, option.name)
            value = list(value) if isinstance(value, tuple) else value  # as JSON carries it
            checked = option.check(value)
            # lists become tuples: the config stays hashable and equal after a JSON round trip
            object.__setattr__(self, option.name, tuple(checked) if isinstance(checked, list) else checked)
    for option in OPTIONS:
        problem = option.engine and option.agrees and option.agrees(self.__dict__, getattr(self, option.name))
        if problem:
            raise OptionError(option.name, problem)


def _doc() -> str:
    lines = ["A training run: where its files are, and every option of ``workers.hyperparameters``.", ""]
    lines += [f"{name}: {text}." for name, _, text, *_ in RUN_FIELDS]
    lines += [f"{name}: {option.help} Default: {value!r}." for name, value in engine_defaults().items()
              for option in [BY_NAME[name]]]
    return "\n".join(lines)


def _fields() -> list:
    run = [(name, kind) if not default else (name, kind, field(default=default[0]))
           for name, kind, _, *default in RUN_FIELDS]
    options = [(name, Any, field(default=tuple(value) if isinstance(value, list) else value))
               for name, value in engine_defaults().items()]
    return run + options


# Generated from the spec, so a new option needs no edit here; frozen like every engine config.
TrainConfig = make_dataclass("TrainConfig", _fields(), frozen=True,
                             namespace={"__post_init__": _post_init, "__doc__": _doc()})
TrainConfig.__module__ = __name__  # pickles and reprs as workers.config.TrainConfig


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
    peak_memory_bytes: this run's peak accelerator memory on a GPU; on CPU (Linux) the peak resident memory
    the run added to its process (above its RSS when the run began, the libraries imported).
    Where the time went (seconds), for estimates of the next run: setup_seconds before the first
    step (loading, tokenizing); eval_seconds over ``evals`` passes on the validation file and
    save_seconds over ``saves`` checkpoints, both inside wall_seconds; final_save_seconds writing
    the adapter or model after the loop. step_tokens_per_second: throughput of the steps alone;
    step_seconds: the time of one of those steps (0: unknown), the pace where tokens do not set it
    (reinforcement samples its answers) or are not counted. rank_parameters: the parameter elements
    each rank held (one entry per process; with sharding each holds its part).
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
    setup_seconds: float = 0.0
    eval_seconds: float = 0.0
    evals: int = 0
    save_seconds: float = 0.0
    saves: int = 0
    final_save_seconds: float = 0.0
    step_tokens_per_second: float = 0.0
    step_seconds: float = 0.0
    rank_parameters: tuple[int, ...] = ()
