"""The strategies: each says whether it can train a dataset (``accepts``), what it would set the options
it cares about to (``defaults``), and trains (``train``). ``STRATEGY_ORDER`` is the order ``auto`` tries
them in: the first that accepts trains.

- ``transfer``: the model is a registered backbone (``workers.vision.backbones``): a new classifier on
  its features trains alone for ``freeze_epochs``, then every layer trains.
- ``native``: the model is ``cnn``: ``native_design(depth, width, dropout)`` trains from scratch.
- ``llm_designed``: the model is ``cnn`` and a designer is wired: the designer proposes the network
  (``workers.vision.design``), checked against the budgets, then it trains from scratch.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

from workers.events import Emit, LogLine
from workers.hyperparameters import AUTO, VISION, Context, OptionError, hyperparameters_resolve
from workers.vision.backbones import BackboneError, backbone_config, backbone_weights, is_backbone
from workers.vision.classifier import classifier_meta
from workers.vision.config import VisionConfig, VisionResult
from workers.vision.data import DatasetSummary, images_load, manifest_read, split_rows, summary_from_manifest
from workers.vision.design import Designer, design_ask
from workers.vision.nets import DesignError, design_check, native_design

STRATEGY_ORDER = ("transfer", "native", "llm_designed")
MIN_FEATURE_SIDE = 2  # native: the image may not shrink below 2×2 before the global pooling
ShouldStop = Callable[[], object]


class Strategy(Protocol):
    name: str

    def accepts(self, config: VisionConfig, summary: DatasetSummary) -> str | None:
        """None when it can train this; else why not, in a phrase."""

    def defaults(self, config: VisionConfig, summary: DatasetSummary) -> dict:
        """The options it would choose for this dataset (applied to those left "auto")."""

    def train(self, config: VisionConfig, emit: Emit, should_stop: ShouldStop) -> VisionResult:
        """Train on ``config``'s files; ``emit`` gets its events, ``should_stop`` is asked every step."""


def _common_problem(summary: DatasetSummary) -> str | None:
    if len(summary.classes) < 2:
        return f"it needs at least two classes, and the dataset has {len(summary.classes)}"
    return None


@dataclass
class Native:
    name: str = "native"

    def accepts(self, config: VisionConfig, summary: DatasetSummary) -> str | None:
        if config.backbone_path:
            return "it trains a CNN from scratch: use model cnn, not a backbone"
        if config.image_size >> config.depth < MIN_FEATURE_SIDE:
            return (
                f"depth {config.depth} halves a {config.image_size}-pixel image below {MIN_FEATURE_SIDE} pixels; "
                "lower depth or raise image_size"
            )
        return _common_problem(summary)

    def defaults(self, config: VisionConfig, summary: DatasetSummary) -> dict:
        depth = config.depth
        while depth > 1 and config.image_size >> depth < MIN_FEATURE_SIDE:
            depth -= 1
        return {"depth": depth}

    def train(self, config: VisionConfig, emit: Emit, should_stop: ShouldStop) -> VisionResult:
        design = native_design(depth=config.depth, width=config.width, dropout=config.dropout)
        return run(config, emit, should_stop, strategy=self.name, design=design)


@dataclass
class Transfer:
    name: str = "transfer"

    def accepts(self, config: VisionConfig, summary: DatasetSummary) -> str | None:
        if not config.backbone_path:
            return "it fine-tunes a backbone: name a registered backbone as the model, not cnn"
        try:
            backbone_config(config.backbone_path)
        except BackboneError as error:
            return str(error)
        return _common_problem(summary)

    def defaults(self, config: VisionConfig, summary: DatasetSummary) -> dict:
        return {"image_size": int(backbone_config(config.backbone_path)["image_size"])}

    def train(self, config: VisionConfig, emit: Emit, should_stop: ShouldStop) -> VisionResult:
        backbone = backbone_config(config.backbone_path)
        emit(
            LogLine(
                f"Backbone from {config.backbone_path}"
                + (f", pretrained on {backbone['pretrained_on']}" if backbone.get("pretrained_on") else "")
            )
        )
        return run(
            config,
            emit,
            should_stop,
            strategy=self.name,
            design=backbone["design"],
            features=backbone_weights(config.backbone_path),
            frozen_epochs=config.freeze_epochs,
        )


@dataclass
class LlmDesigned:
    designer: Designer | None = None
    name: str = "llm_designed"

    def accepts(self, config: VisionConfig, summary: DatasetSummary) -> str | None:
        if self.designer is None:
            return "no designer model is configured (VISION_DESIGNER_MODEL)"
        if config.backbone_path:
            return "the designer's network trains from scratch: use model cnn, not a backbone"
        return _common_problem(summary)

    def defaults(self, config: VisionConfig, summary: DatasetSummary) -> dict:
        return {}

    def train(self, config: VisionConfig, emit: Emit, should_stop: ShouldStop) -> VisionResult:
        rows = manifest_read(config.manifest_path)
        if config.resume_from:  # the network being trained is the one proposed before: nothing is asked again
            meta = classifier_meta(config.resume_from)
            emit(LogLine("Resuming the design the designer proposed before the checkpoint"))
            return run(config, emit, should_stop, strategy=self.name, design=meta["design"], rows=rows,
                       design_note=meta.get("design_note"))
        summary = summary_from_manifest(rows)
        design, stats, attempts = design_ask(
            self.designer,
            classes=list(summary.classes),
            counts=summary.counts,
            image_size=config.image_size,
            max_parameters=config.max_parameters,
            max_mflops=config.max_mflops,
            attempts=config.design_attempts,
            emit=emit,
        )
        return run(
            config,
            emit,
            should_stop,
            strategy=self.name,
            design=design,
            rows=rows,
            design_note={
                "proposals": attempts,
                "designer_budget": {"max_parameters": config.max_parameters, "max_mflops": config.max_mflops},
            },
        )


def strategies(designer: Designer | None = None) -> dict[str, Strategy]:
    """The registry, in ``STRATEGY_ORDER``; ``llm_designed`` asks ``designer``."""
    found: dict[str, Strategy] = {"transfer": Transfer(), "native": Native(), "llm_designed": LlmDesigned(designer)}
    return {name: found[name] for name in STRATEGY_ORDER}


def vision_plan(
    given: dict | None,
    summary: DatasetSummary,
    *,
    backbone_path: str = "",
    designer: Designer | None = None,
    seed: int = 42,
) -> dict:
    """The run's options, resolved (``workers.hyperparameters``), with the strategy chosen: the one
    asked for, or with ``auto`` the first of ``STRATEGY_ORDER`` that accepts; each strategy's
    ``defaults`` fill the options left "auto". ``OptionError`` naming ``strategy`` when none can train it
    (or naming the option that is wrong)."""
    given = dict(given or {})
    asked = given.get("strategy", AUTO)
    registry = strategies(designer)
    names = STRATEGY_ORDER if asked == AUTO else (asked,)
    reasons, refusals = [], []
    for name in names:
        try:
            resolved = hyperparameters_resolve(
                given, Context(objective=VISION, strategy=name, image_side=summary.image_side or None)
            )
        except OptionError as error:
            if asked != AUTO:
                raise
            refusals.append(error)  # e.g. width given: an option of native, not of transfer
            reasons.append(f'"{name}": {error.message}')
            continue
        strategy = registry.get(name)
        if strategy is None:  # the spec knows a strategy the registry lacks: refused plainly
            reasons.append(f'"{name}" is not available')
            continue
        config = config_make(resolved, backbone_path=backbone_path, seed=seed)
        if strategy.accepts(config, summary) is None:  # with its own choices for what was left "auto"
            chosen = strategy.defaults(config, summary)
            resolved.update({k: v for k, v in chosen.items() if k in resolved["auto_resolved"]})
            config = config_make(resolved, backbone_path=backbone_path, seed=seed)
        reason = strategy.accepts(config, summary)
        if reason is None:
            return resolved
        reasons.append(f'"{name}": {reason}')
    if refusals and len(refusals) == len(names) and len({e.message for e in refusals}) == 1:
        raise refusals[0]  # the same for every strategy: the option itself is wrong
    if asked == AUTO:
        raise OptionError("strategy", "auto: no strategy can train this dataset: " + "; ".join(reasons))
    raise OptionError("strategy", f"{reasons[0]}")


def config_make(options: dict, **run) -> VisionConfig:
    names = {f.name for f in fields(VisionConfig)}
    return VisionConfig(**{k: v for k, v in {**options, **run}.items() if k in names})


def run_vision_training(
    config: VisionConfig, emit: Emit, should_stop: ShouldStop, designer: Designer | None = None
) -> VisionResult:
    """Train ``config.strategy`` on ``config``'s files (the registry's entry point)."""
    strategy = strategies(designer)[config.strategy]
    return strategy.train(config, emit, should_stop)


def run(
    config: VisionConfig,
    emit: Emit,
    should_stop: ShouldStop,
    *,
    strategy: str,
    design: dict,
    features: dict | None = None,
    frozen_epochs: int = 0,
    rows: list | None = None,
    design_note: dict | None = None,
) -> VisionResult:
    """Load the images, build ``design`` (with ``features``' weights when given), fit, evaluate on the
    held-out images and save the classifier to ``config.output_dir``."""
    import torch

    from workers.vision.classifier import classifier_save
    from workers.vision.evaluation import evaluate, misclassified_save
    from workers.vision.modules import classifier_build
    from workers.vision.train import Images, fit, predictions

    started = time.monotonic()
    torch.manual_seed(config.seed)
    rows = rows if rows is not None else manifest_read(config.manifest_path)
    summary = summary_from_manifest(rows)
    classes = list(summary.classes)
    stats = design_check(design, image_size=config.image_size, classes=len(classes))
    train, valid = split_rows(rows, share=config.validation_share, seed=config.seed)
    emit(
        LogLine(
            f"{strategy}: {len(train)} training and {len(valid)} validation images of {len(classes)} classes at "
            f"{config.image_size}×{config.image_size}; {stats.parameters:,} parameters"
        )
    )
    pixels = images_load(config.archive_path, config.archive_name, [row["image"] for row in rows], config.image_size)
    labels = torch.tensor([classes.index(row["label"]) for row in rows])
    images = Images(pixels[train], labels[train], pixels[valid], labels[valid], classes)
    model = classifier_build(design, image_size=config.image_size, classes=len(classes), dropout=config.dropout)
    if features is not None:
        model.features.load_state_dict(features)
    model.to("cuda" if torch.cuda.is_available() else "cpu")  # a GPU worker's; the images stay on the CPU
    meta = {
        "kind": "image_classifier",
        "strategy": strategy,
        "design": {"layers": design["layers"]},
        "classes": classes,
        "image_size": config.image_size,
        "dropout": config.dropout,
        **({"design_note": design_note} if design_note else {}),
    }
    done = fit(model, images, config, emit, should_stop, frozen_epochs=frozen_epochs, meta=meta)
    design_stored = {**design, "parameters": stats.parameters, "mflops": stats.mflops, **(design_note or {})}
    common = {
        "strategy": strategy,
        "epochs": done.epochs,
        "best_epoch": done.best_epoch,
        "train_loss": done.train_loss,
        "valid_loss": done.valid_loss,
        "valid_accuracy": done.valid_accuracy,
        "design": design_stored,
        "steps": done.steps,
        "total_steps": done.total_steps,
        "parameters": stats.parameters,
        "images": len(rows),
    }
    if done.stop:
        return VisionResult(
            model_dir="", evaluation={}, wall_seconds=time.monotonic() - started, stopped=True, stop=done.stop, **common
        )
    evaluation, mistakes_dir = {}, str(Path(config.output_dir) / "misclassified")
    if len(valid):
        logits, guessed = predictions(model, images.valid_x)
        evaluation = evaluate(guessed.tolist(), images.valid_y.tolist(), classes)
        evaluation["misclassified"] = misclassified_save(
            logits.softmax(dim=1), images.valid_y.tolist(), [rows[i]["image"] for i in valid], classes,
            out_dir=mistakes_dir, archive_path=config.archive_path, archive_name=config.archive_name)
    out = classifier_save(
        model.cpu().eval(), str(Path(config.output_dir) / "model"), meta={**meta, "evaluation": evaluation}
    )
    return VisionResult(model_dir=str(out), evaluation=evaluation, wall_seconds=time.monotonic() - started,
                        misclassified_dir=mistakes_dir if evaluation.get("misclassified") else "", **common)


__all__ = [
    "STRATEGY_ORDER",
    "DesignError",
    "LlmDesigned",
    "Native",
    "Strategy",
    "Transfer",
    "config_make",
    "is_backbone",
    "run_vision_training",
    "strategies",
    "vision_plan",
]
