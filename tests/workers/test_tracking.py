"""Experiment trackers on a real tiny run: what they hold afterwards, read back with their own readers."""

import json
import os

import pytest

from workers.config import TrainConfig
from workers.sample_data import classification_write
from workers.tracking import tracker_environment
from workers.training import run_training


def _config(tiny_model_path, tmp_path, trackers: list[dict]) -> TrainConfig:
    train = classification_write(tmp_path / "train.jsonl", 8)
    return TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                       n_epochs=1, batch_size=4, learning_rate=3e-3, logging_steps=1,
                       trackers=json.dumps(trackers), run_name="ftjob-test")


def test_tensorboard_run_writes_train_loss_events(tiny_model_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tensorboard"
    result = run_training(_config(tiny_model_path, tmp_path, [{"type": "tensorboard", "dir": str(logs)}]),
                          lambda event: None)
    events = EventAccumulator(str(logs))
    events.Reload()
    losses = [scalar.value for scalar in events.Scalars("train/loss")]
    assert len(losses) == result.steps and all(loss > 0 for loss in losses)


def test_mlflow_run_logs_the_loss_to_a_local_store(tiny_model_path, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = {"type": "mlflow", "tracking_uri": uri, "experiment": "tiny-experiment"}
    result = run_training(_config(tiny_model_path, tmp_path, [tracker]), lambda event: None)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-experiment")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "ftjob-test"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert len(history) == result.steps and all(metric.value > 0 for metric in history)


def test_tracker_environment_is_restored_after_the_run(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run_training(_config(tiny_model_path, tmp_path, [{"type": "tensorboard", "dir": str(tmp_path / "tb")}]),
                 lambda event: None)
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_wandb_offline_settings_become_its_environment():
    env = tracker_environment(json.dumps([{"type": "wandb", "project": "p", "tags": ["a", "b"], "dir": "/tmp/w",
                                           "mode": "offline"}]))
    assert env == {"WANDB_PROJECT": "p", "WANDB_DIR": "/tmp/w", "WANDB_MODE": "offline", "WANDB_TAGS": "a,b"}


def test_unknown_tracker_is_refused():
    with pytest.raises(ValueError, match="unknown tracker 'neptune'"):
        tracker_environment(json.dumps([{"type": "neptune"}]))
