"""workers.vision: strategies as plugins. A generated set of coloured shapes (circles, squares,
triangles; the colour says nothing) trains on CPU: native reaches 90% on images it never saw, auto picks
the documented strategy, transfer fine-tunes a backbone pretrained here, and llm_designed trains the
design a stub designer proposes, or fails clearly after feeding each refusal back."""

import json
from pathlib import Path

import pytest

from tests.factories import archive_bytes, make_backbone
from workers.events import LogLine, Metric
from workers.hyperparameters import OptionError
from workers.images import ImageConfig, run_image_validation
from workers.sample_data import SHAPES, shape_image, shape_set
from workers.vision import (
    STRATEGY_ORDER,
    DesignError,
    classify,
    config_make,
    run_vision_training,
    summary_from_stats,
    vision_plan,
)
from workers.vision.design import design_ask
from workers.vision.nets import design_check, native_design

CLASSES = [f"{shape}s" for shape in SHAPES]


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> dict:
    """80 images per class, zipped and checked as an upload is: the archive, its manifest, its summary."""
    root = tmp_path_factory.mktemp("shapes")
    (root / "shapes.zip").write_bytes(archive_bytes(shape_set(80)))
    result = run_image_validation(
        ImageConfig(path=str(root / "shapes.zip"), filename="shapes.zip", output_dir=str(root / "check"))
    )
    assert result.ok, result.summary
    return {
        "archive_path": str(root / "shapes.zip"),
        "archive_name": "shapes.zip",
        "manifest_path": str(root / "check" / "manifest.jsonl"),
        "summary": summary_from_stats(result.stats),
    }


@pytest.fixture(scope="session")
def backbone(tmp_path_factory) -> str:
    """A backbone pretrained here on another task (the colour of a disc), saved as a registered one is."""
    return make_backbone(tmp_path_factory.mktemp("backbone") / "backbone")


def _config(shapes: dict, tmp_path: Path, given: dict, **plan):
    resolved = vision_plan(given, shapes["summary"], **plan)
    return config_make(
        resolved,
        archive_path=shapes["archive_path"],
        archive_name=shapes["archive_name"],
        manifest_path=shapes["manifest_path"],
        output_dir=str(tmp_path / "out"),
        backbone_path=plan.get("backbone_path", ""),
    )


def _accuracy_on_new_images(model_dir: str, per_class: int = 10) -> float:
    hits = 0
    for shape in SHAPES:
        for seed in range(1000, 1000 + per_class):  # seeds the training set never used
            best = classify(model_dir, shape_image(shape, seed))[0]
            hits += best["label"] == f"{shape}s"
    return hits / (per_class * len(SHAPES))


def test_native_learns_the_shapes_and_classifies_new_images(shapes, tmp_path):
    events = []
    config = _config(shapes, tmp_path, {"strategy": "native", "n_epochs": 8, "width": 16, "batch_size": 16})
    result = run_vision_training(config, events.append, lambda: "")
    epochs = [e.values for e in events if isinstance(e, Metric)]
    assert [v["epoch"] for v in epochs] == list(range(1, result.epochs + 1))
    assert {"loss", "train_accuracy", "eval_loss", "valid_accuracy"} <= set(epochs[0])
    assert result.strategy == "native" and result.valid_accuracy >= 0.9
    evaluation = result.evaluation
    assert evaluation["classes"] == CLASSES and evaluation["accuracy"] >= 0.9
    assert sum(map(sum, evaluation["confusion_matrix"])) == evaluation["images"] == 36  # 15% of each class
    assert {c["label"] for c in evaluation["per_class"]} == set(CLASSES)
    assert all(0 <= c["f1"] <= 1 for c in evaluation["per_class"])
    assert _accuracy_on_new_images(result.model_dir) >= 0.9  # chance: 33%
    ranked = classify(result.model_dir, shape_image("square", 2000))
    assert (
        [p["label"] for p in ranked]
        and sorted((p["score"] for p in ranked), reverse=True) == [p["score"] for p in ranked]
        and abs(sum(p["score"] for p in ranked) - 1) < 1e-3
    )


def test_auto_tries_transfer_then_native_then_llm_designed(shapes, backbone):
    assert STRATEGY_ORDER == ("transfer", "native", "llm_designed")
    assert vision_plan({}, shapes["summary"])["strategy"] == "native"  # model cnn: no backbone to transfer
    # native's own options pass transfer by (they are not its options), and native takes them
    assert vision_plan({"width": 8}, shapes["summary"])["strategy"] == "native"
    with pytest.raises(OptionError, match="width must be from 4 to 512"):  # wrong for every strategy
        vision_plan({"width": 2}, shapes["summary"])
    planned = vision_plan({}, shapes["summary"], backbone_path=backbone)
    assert planned["strategy"] == "transfer" and planned["image_size"] == 32  # the backbone's own
    assert "depth" not in planned and planned["freeze_epochs"] == 1


@pytest.mark.parametrize(
    ("given", "plan", "reason"),
    [
        ({"strategy": "transfer"}, {}, "name a registered backbone"),
        ({"strategy": "llm_designed"}, {}, "no designer model is configured"),
        ({"strategy": "native", "depth": 6, "image_size": 32}, {}, "depth 6 halves a 32-pixel image"),
        ({"strategy": "native", "freeze_epochs": 2}, {}, "freeze_epochs applies only with strategy transfer"),
    ],
)
def test_a_strategy_that_cannot_train_the_dataset_is_refused_naming_strategy(shapes, given, plan, reason):
    with pytest.raises(OptionError) as refused:
        vision_plan(given, shapes["summary"], **plan)
    assert reason in refused.value.message
    assert refused.value.name == ("freeze_epochs" if "freeze_epochs" in given else "strategy")


def _features_of(model_dir: str) -> dict:
    from safetensors.torch import load_file

    return {
        k.removeprefix("features."): v
        for k, v in load_file(str(Path(model_dir) / "model.safetensors")).items()
        if k.startswith("features.")
    }


def test_transfer_starts_from_the_backbone_frozen_then_unfreezes_it(shapes, backbone, tmp_path):
    from workers.vision.backbones import backbone_weights

    pretrained = backbone_weights(backbone)
    events = []
    frozen = run_vision_training(
        _config(shapes, tmp_path / "a", {"strategy": "transfer", "n_epochs": 1}, backbone_path=backbone),
        events.append,
        lambda: "",
    )
    lines = [e.message for e in events if isinstance(e, LogLine)]
    assert "pretrained on coloured discs" in lines[0] and any("Epoch 1: the backbone is frozen" in x for x in lines)
    kept = _features_of(frozen.model_dir)
    assert kept.keys() == pretrained.keys() and all((kept[k] == pretrained[k]).all() for k in kept)

    events = []
    tuned = run_vision_training(
        _config(
            shapes,
            tmp_path / "b",
            {"strategy": "transfer", "n_epochs": 2, "freeze_epochs": 1, "validation_share": 0},
            backbone_path=backbone,
        ),
        events.append,
        lambda: "",
    )
    assert any("Epoch 2: the backbone is unfrozen" in e.message for e in events if isinstance(e, LogLine))
    changed = _features_of(tuned.model_dir)  # nothing held out: the epoch of the lower training loss is kept
    assert tuned.best_epoch == 2
    assert any(not (changed[k] == pretrained[k]).all() for k in changed if k.endswith("weight"))
    assert tuned.strategy == "transfer" and tuned.epochs == 2
    assert json.loads((Path(tuned.model_dir) / "vision.json").read_text())["classes"] == CLASSES


DESIGN = {
    "layers": [
        {"type": "conv", "out": 16, "kernel": 3},
        {"type": "batchnorm"},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "conv", "out": 32, "kernel": 3},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "global_avg_pool"},
    ]
}


def test_llm_designed_trains_the_stub_designers_network_and_stores_it(shapes, tmp_path):
    asked = []

    def designer(messages):
        asked.append(messages)
        return "Here it is:\n```json\n" + json.dumps(DESIGN) + "\n```"

    config = _config(shapes, tmp_path, {"strategy": "llm_designed", "n_epochs": 1}, designer=designer)
    result = run_vision_training(config, lambda e: None, lambda: "", designer=designer)
    assert len(asked) == 1 and "3 classes (circles, squares, triangles)" in asked[0][-1]["content"]
    assert result.strategy == "llm_designed" and result.design["layers"] == DESIGN["layers"]
    assert (
        result.design["proposals"] == 1
        and result.design["parameters"] == design_check(DESIGN, image_size=32, classes=3).parameters
    )
    stored = json.loads((Path(result.model_dir) / "vision.json").read_text())
    assert stored["design"]["layers"] == DESIGN["layers"] and stored["strategy"] == "llm_designed"


def test_a_refused_design_is_asked_again_with_the_reason_then_fails_clearly():
    replies = iter(
        [
            "I think a transformer would be best!",
            json.dumps({"layers": [{"type": "conv", "out": 1024, "kernel": 7}] * 3}),
            json.dumps({"layers": [{"type": "exec", "code": "import os"}]}),
        ]
    )
    prompts, lines = [], []

    def designer(messages):
        prompts.append(messages)
        return next(replies)

    with pytest.raises(DesignError) as failed:
        design_ask(
            designer,
            classes=CLASSES,
            counts={c: 80 for c in CLASSES},
            image_size=32,
            max_parameters=200_000,
            max_mflops=50,
            attempts=3,
            emit=lines.append,
        )
    assert "the designer's 3 proposals were all refused; the last: layer 1: 'exec' is not an allowed layer type" in str(
        failed.value
    )
    assert "That design was refused: the reply holds no JSON object" in prompts[1][-1]["content"]
    assert "over the budget of 200,000" in prompts[2][-1]["content"]
    assert prompts[2][-2]["role"] == "assistant" and "conv" in prompts[2][-2]["content"]
    assert len([line for line in lines if "refused" in line.message]) == 3


def test_a_design_accepted_on_the_second_proposal():
    replies = iter(["{not json", json.dumps(DESIGN)])
    design, stats, attempts = design_ask(
        lambda messages: next(replies),
        classes=CLASSES,
        counts={},
        image_size=32,
        max_parameters=100_000,
        max_mflops=50,
        attempts=3,
        emit=lambda e: None,
    )
    assert design == DESIGN and attempts == 2 and 0 < stats.parameters <= 100_000


@pytest.mark.parametrize(
    ("design", "message"),
    [
        ({"layers": [{"type": "conv", "out": 8, "padding": 1}]}, "unknown field 'padding'"),
        ({"layers": [{"type": "conv"}]}, "out is required"),
        ({"layers": [{"type": "conv", "out": 8, "kernel": 9}]}, "kernel must be an integer from 1 to 7"),
        ({"layers": [{"type": "global_avg_pool"}, {"type": "conv", "out": 8}]}, "only linear, dropout"),
        ({"layers": [{"type": "maxpool", "size": 4}] * 4}, "too small to pool"),
        ({"layers": []}, "1 to 64 layers"),
        ([{"type": "conv"}], "a design is a JSON object"),
    ],
)
def test_design_check_refuses_what_it_cannot_build(design, message):
    with pytest.raises(DesignError, match=message):
        design_check(design, image_size=32, classes=3)


def test_native_design_is_a_checked_design():
    stats = design_check(native_design(depth=3, width=16, dropout=0.2), image_size=32, classes=3)
    assert stats.features == 64 and stats.parameters < 100_000


def test_should_stop_ends_the_run_without_a_model(shapes, tmp_path):
    config = _config(shapes, tmp_path, {"strategy": "native", "n_epochs": 2, "width": 8, "optimizer": "sgd"})
    asked = []
    result = run_vision_training(
        config, lambda e: None, lambda: asked.append(1) or ("discard" if len(asked) > 2 else "")
    )
    assert result.stopped and result.stop == "discard" and result.model_dir == "" and result.steps == 3


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_of_the_spec_builds(optimizer):
    import torch

    from workers.vision.train import optimizer_make

    config = config_make({"optimizer": optimizer, "weight_decay": 0.01 if optimizer == "adamw" else 0.0})
    made = optimizer_make(config, torch.nn.Linear(2, 2).parameters())
    assert type(made).__name__.lower() == optimizer


def test_the_evaluation_keeps_the_most_confident_mistakes_with_thumbnails(shapes, tmp_path):
    from PIL import Image

    given = {"strategy": "native", "n_epochs": 1, "width": 4, "learning_rate": 1e-6, "early_stopping_patience": 0}
    result = run_vision_training(_config(shapes, tmp_path, given), lambda event: None, lambda: "")
    evaluation = result.evaluation
    wrong = evaluation["images"] - sum(evaluation["confusion_matrix"][i][i] for i in range(3))
    mistakes = evaluation["misclassified"]
    assert wrong > 0 and len(mistakes) == min(wrong, 24)  # an untrained network: chance
    assert [m["score"] for m in mistakes] == sorted((m["score"] for m in mistakes), reverse=True)
    for mistake in mistakes:
        assert mistake["true"] != mistake["predicted"] and mistake["image"].split("/")[0] == mistake["true"]
        with Image.open(Path(result.misclassified_dir) / mistake["file"]) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == ("JPEG", (64, 64))
