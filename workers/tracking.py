"""Experiment trackers a run reports to, through transformers' ``report_to`` and the environment
variables its callbacks read (TensorBoard, MLflow, Weights & Biases)."""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# tracker type → the module the callback needs (transformers reports to none it cannot import)
TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def trackers_parse(text: str) -> list[dict]:
    """The trackers of ``TrainConfig.trackers`` (JSON text), each with its ``type`` known."""
    trackers = json.loads(text) if text else []
    for tracker in trackers:
        if tracker.get("type") not in TRACKER_MODULES:
            raise ValueError(f"unknown tracker {tracker.get('type')!r}; use one of {', '.join(TRACKER_MODULES)}")
    return trackers


def tracker_report_to(text: str) -> list[str] | str:
    """transformers' ``report_to`` for the trackers ("none" for none)."""
    return [tracker["type"] for tracker in trackers_parse(text)] or "none"


def tracker_environment(text: str) -> dict[str, str]:
    """The environment variables transformers' tracker callbacks read, for these trackers.

    tensorboard: ``dir`` (where the event files go). mlflow: ``tracking_uri`` (a server URL or a
    database such as ``sqlite:///…/mlflow.db``), ``experiment``. wandb: ``project``, ``entity``, ``tags``,
    ``dir``, ``mode`` ("offline" writes the run under ``dir`` for a later ``wandb sync``). The run's
    name is ``TrainConfig.run_name`` (transformers' ``run_name``).
    """
    env: dict[str, str] = {}
    for tracker in trackers_parse(text):
        kind = tracker["type"]
        if kind == "tensorboard":
            env["TENSORBOARD_LOGGING_DIR"] = tracker["dir"]
        elif kind == "mlflow":
            env["MLFLOW_TRACKING_URI"] = tracker["tracking_uri"]
            env["MLFLOW_EXPERIMENT_NAME"] = tracker["experiment"]
        elif kind == "wandb":
            env.update({"WANDB_PROJECT": tracker["project"], "WANDB_DIR": tracker["dir"],
                        "WANDB_MODE": tracker.get("mode", "offline"), "WANDB_TAGS": ",".join(tracker.get("tags") or []),
                        **({"WANDB_ENTITY": tracker["entity"]} if tracker.get("entity") else {})})
    return env


@contextmanager
def tracker_env(text: str) -> Iterator[None]:
    """Set the trackers' environment variables for one run, and put the old values back after it
    (a worker process trains job after job)."""
    env = tracker_environment(text)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        _wandb_finish(text)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wandb_finish(text: str) -> None:
    """End the W&B run transformers' callback left open (it ends only when the process exits): its
    offline files are complete before the job keeps them, and the worker's next job gets a run of its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None and "wandb" in tracker_report_to(text):
        wandb.finish()
