"""Vision checkpoints: a run checkpoints each epoch (or every save_steps) and when asked to stop with one;
a run resumed from any of them (mid-epoch, at an epoch's last step, or at an epoch's end) ends with the
same weights, epochs and early-stopping outcome as the run that was never stopped, training no step twice."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.workers.test_vision import DESIGN, _config, shapes  # noqa: F401  (shapes: the generated image set)
from workers.config import Stop
from workers.events import ArtifactSaved, LogLine, Metric, Progress
from workers.vision import run_vision_training

PER_EPOCH = 7  # 204 training images (36 of 240 held out) in batches of 32
OPTIONS = {"strategy": "native", "n_epochs": 3, "width": 8, "batch_size": 32, "early_stopping_patience": 1,
           "augmentation": "flip", "dropout": 0.3}


def _run(config, stop_at: int = 0, designer=None):
    """(result, events) of a run asked to stop with a checkpoint after step ``stop_at`` of this run."""
    events, asked = [], []

    def should_stop():
        asked.append(1)
        return Stop.CHECKPOINT if len(asked) == stop_at else Stop.NO

    return run_vision_training(config, events.append, should_stop, designer=designer), events


def _resumed(config, checkpoint: Path, tmp_path: Path):
    return replace(config, resume_from=str(checkpoint), output_dir=str(tmp_path / "resumed"))


def _weights(model_dir: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.fixture(scope="module")
def whole(shapes, tmp_path_factory):  # noqa: F811
    """The run never stopped, and its checkpoints (one per epoch)."""
    config = _config(shapes, tmp_path_factory.mktemp("whole"), OPTIONS)
    result, events = _run(config)
    return config, result, events


@pytest.mark.parametrize(("stop_at", "place"), [(10, "mid-epoch"), (7, "an epoch's last step"), (0, "epoch end")])
def test_a_resumed_run_ends_as_the_run_never_stopped(shapes, whole, tmp_path, stop_at, place):  # noqa: F811
    config, expected, expected_events = whole
    if stop_at:
        first = _config(shapes, tmp_path / "first", OPTIONS)
        stopped, events = _run(first, stop_at=stop_at)
        assert stopped.stopped and stopped.stop == "checkpoint" and stopped.model_dir == ""
        saved = [e for e in events if isinstance(e, ArtifactSaved)]
        assert saved[-1].step == stop_at and Path(saved[-1].path).name == f"checkpoint-{stop_at}"
        checkpoint = Path(saved[-1].path)
    else:
        first, events = config, [e for e in expected_events if not isinstance(e, Metric) or e.step <= PER_EPOCH]
        checkpoint = Path(config.output_dir) / "checkpoints" / f"checkpoint-{PER_EPOCH}"
        stop_at = PER_EPOCH
    files = {p.name for p in checkpoint.iterdir()}
    assert {"vision.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json"} <= files

    result, later = _run(_resumed(first, checkpoint, tmp_path))
    steps = [e.step for e in later if isinstance(e, Progress)]
    assert steps == list(range(stop_at + 1, expected.steps + 1))  # no step twice, none left out
    assert any(isinstance(e, LogLine) and e.message.startswith(f"Resuming at step {stop_at} ") for e in later)
    epochs = [e.values for e in events if isinstance(e, Metric) and e.step <= stop_at]
    epochs += [e.values for e in later if isinstance(e, Metric)]
    assert [v["epoch"] for v in epochs] == list(range(1, expected.epochs + 1))
    wanted = [e.values for e in expected_events if isinstance(e, Metric)]
    assert all(got == pytest.approx(want, rel=1e-5) for got, want in zip(epochs, wanted, strict=True))
    assert (result.epochs, result.best_epoch, result.steps) == (expected.epochs, expected.best_epoch, expected.steps)
    assert result.valid_accuracy == pytest.approx(expected.valid_accuracy)
    got, want = _weights(result.model_dir), _weights(expected.model_dir)
    assert all((got[name] - want[name]).abs().max() < 1e-5 for name in want)


def test_save_steps_checkpoints_every_n_steps(shapes, tmp_path):  # noqa: F811
    config = _config(shapes, tmp_path, {**OPTIONS, "n_epochs": 2, "save_steps": 3})
    _, events = _run(config)
    assert [e.step for e in events if isinstance(e, ArtifactSaved)] == [3, 6, 9, 12]
    state = json.loads((Path(config.output_dir) / "checkpoints" / "checkpoint-9" / "trainer_state.json").read_text())
    assert state["loop"]["epoch"] == 2 and state["loop"]["position"] == 2 * 32  # 9 = 7 + 2 batches


def test_a_discarded_run_saves_no_checkpoint(shapes, tmp_path):  # noqa: F811
    config = _config(shapes, tmp_path, {**OPTIONS, "n_epochs": 2})
    events = []
    result = run_vision_training(config, events.append, lambda: Stop.DISCARD)
    assert result.stop == "discard" and not any(isinstance(e, ArtifactSaved) for e in events)


def test_a_resumed_llm_designed_run_keeps_its_design_and_asks_nothing(shapes, tmp_path):  # noqa: F811
    asked = []

    def designer(messages):
        asked.append(messages)
        return json.dumps(DESIGN)

    options = {"strategy": "llm_designed", "n_epochs": 2, "batch_size": 32}
    first = _config(shapes, tmp_path / "first", options, designer=designer)
    stopped, events = _run(first, stop_at=3, designer=designer)
    checkpoint = [e for e in events if isinstance(e, ArtifactSaved)][-1].path
    result, _ = _run(_resumed(first, Path(checkpoint), tmp_path), designer=designer)
    assert len(asked) == 1 and result.steps == 2 * PER_EPOCH
    assert result.design["layers"] == DESIGN["layers"] and result.design["proposals"] == 1
