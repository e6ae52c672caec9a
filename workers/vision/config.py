"""``VisionConfig``: one vision run, generated from the options of ``workers.hyperparameters`` that apply
to the objective ``vision`` (declared there once), plus where its files are."""

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from workers.hyperparameters import VISION, Context, hyperparameters_resolve, options_applying

RUN_FIELDS = (
    ("archive_path", str, 'local path of the dataset\'s archive (ZIP or tar); default "" (none yet)', ""),
    ("archive_name", str, 'the archive\'s uploaded name: decides ZIP or tar; default ""', ""),
    ("manifest_path", str, 'local manifest.jsonl ({"image", "label"[, "split"]} per image); default ""', ""),
    ("output_dir", str, 'local directory for the trained classifier; default ""', ""),
    (
        "backbone_path",
        str,
        'transfer: local directory of a backbone (``workers.vision.backbones``); "" = model cnn',
        "",
    ),
    ("seed", int, "seed for initialisation, the hold-out and data order; default 42", 42),
    (
        "resume_from",
        str,
        'local checkpoint directory (``workers.vision.train``) the run continues from; "" = from the start',
        "",
    ),
)


def vision_defaults() -> dict:
    """Every vision option's value when nothing is known (the fields' defaults)."""
    resolved = hyperparameters_resolve({}, Context(objective=VISION))
    return {
        option.name: resolved[option.name] if option.name in resolved else _default_of(option)
        for option in options_applying(VISION)
    }


def _default_of(option) -> Any:
    """A strategy's own option that the default strategy drops: its "auto" value all the same."""
    return option.auto_value(Context(objective=VISION), {"optimizer": "adam"}, {})


def _post_init(self) -> None:
    for option in options_applying(VISION):
        object.__setattr__(self, option.name, option.check(getattr(self, option.name)))


def _fields() -> list:
    run = [(name, kind, field(default=default)) for name, kind, _, default in RUN_FIELDS]
    return run + [(name, Any, field(default=value)) for name, value in vision_defaults().items()]


def _doc() -> str:
    from workers.hyperparameters import BY_NAME

    lines = ["A vision run: where its files are, and every vision option of ``workers.hyperparameters``.", ""]
    lines += [f"{name}: {text}." for name, _, text, _ in RUN_FIELDS]
    lines += [f"{name}: {BY_NAME[name].help} Default: {value!r}." for name, value in vision_defaults().items()]
    return "\n".join(lines)


VisionConfig = make_dataclass(
    "VisionConfig", _fields(), frozen=True, namespace={"__post_init__": _post_init, "__doc__": _doc()}
)
VisionConfig.__module__ = __name__


@dataclass(frozen=True)
class VisionResult:
    """What a vision run produced.

    model_dir: the trained classifier (``vision.json`` and ``model.safetensors``); "" when stopped.
    strategy: the strategy that trained it. epochs: epochs run; best_epoch: the one whose weights were kept.
    train_loss / valid_loss / valid_accuracy: of the best epoch (validation: the held-out images).
    evaluation: ``workers.vision.evaluation.evaluate`` on the held-out images (accuracy, per class
    precision/recall/F1, confusion matrix). design: the network's design (``workers.vision.nets``), with
    its parameters and multiply-adds. steps / total_steps: optimizer steps done / planned.
    wall_seconds: time in the loop. stopped / stop: ``should_stop`` ended it early, and how.
    misclassified_dir: the thumbnails of ``evaluation["misclassified"]`` (its entries' ``file``); "" when
    every held-out image was right.
    """

    model_dir: str
    strategy: str
    epochs: int
    best_epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float
    evaluation: dict
    design: dict
    steps: int
    total_steps: int
    wall_seconds: float
    stopped: bool = False
    stop: str = ""
    parameters: int = 0
    images: int = 0
    misclassified_dir: str = ""
