"""Experiment trackers (OpenAI's ``integrations``): checking them, the engine's settings, where a run is.

A job names trackers as OpenAI does (``{"type": "wandb", "wandb": {"project": ...}}``); ours follow the
same shape: ``{"type": "mlflow", "mlflow": {"tracking_uri": ..., "experiment": ...}}`` and
``{"type": "tensorboard"}``. The engine reports to them through transformers' ``report_to``
(``workers.tracking``).
"""

import importlib.util
import io
import json
import os
import tarfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from finetune_site.errors import InvalidRequest
from finetune_site.files import storage_put_dir
from jobs_app.models import FineTuneJob
from workers.tracking import TRACKER_MODULES

# the fields each tracker's object may hold: name → (type, required)
TRACKER_FIELDS = {
    "wandb": {"project": (str, True), "name": (str, False), "entity": (str, False), "tags": (list, False)},
    "mlflow": {"tracking_uri": (str, False), "experiment": (str, False)},
    "tensorboard": {},
}
MAX_INTEGRATIONS = 3
DEFAULT_EXPERIMENT = "finetune"


def job_integrations_check(integrations) -> list[dict]:
    """The trackers a job asks for, checked: a known type whose package the operator installed, with
    the fields that type has; a 400 names the first wrong one (``integrations[0].type``)."""
    if not integrations:
        return []
    if not isinstance(integrations, list) or len(integrations) > MAX_INTEGRATIONS:
        raise InvalidRequest(f"integrations must be a list of at most {MAX_INTEGRATIONS} trackers",
                             param="integrations")
    checked, seen = [], set()
    for index, integration in enumerate(integrations):
        param = f"integrations[{index}]"
        kind = integration.get("type") if isinstance(integration, dict) else None
        if kind not in TRACKER_FIELDS:
            raise InvalidRequest(f"{param}.type must be one of {', '.join(TRACKER_FIELDS)}, not {kind!r}",
                                 param=f"{param}.type", code="unsupported_integration")
        if kind in seen:
            raise InvalidRequest(f"{kind} is named twice in integrations", param=f"{param}.type")
        seen.add(kind)
        if importlib.util.find_spec(TRACKER_MODULES[kind]) is None:
            raise InvalidRequest(f"the {kind} tracker is not installed on this platform: the operator must "
                                 f"install it (pip install {_package(kind)}) before jobs can report to it",
                                 param=f"{param}.type", code="integration_not_installed")
        extra = set(integration) - {"type", kind}
        if extra:
            raise InvalidRequest(f"{param} has no field {sorted(extra)[0]!r}", param=f"{param}.{sorted(extra)[0]}")
        checked.append({"type": kind, **({kind: _fields_check(kind, integration.get(kind), param)}
                                         if TRACKER_FIELDS[kind] else {})})
    return checked


def _package(kind: str) -> str:
    return {"mlflow": "mlflow-skinny"}.get(kind, kind)


def _fields_check(kind: str, given, param: str) -> dict:
    param = f"{param}.{kind}"
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    fields = TRACKER_FIELDS[kind]
    for name, value in given.items():
        if name not in fields:
            raise InvalidRequest(f"{param} has no field {name!r}; use {', '.join(fields)}", param=f"{param}.{name}")
        kind_, _ = fields[name]
        wrong = not isinstance(value, kind_) or (kind_ is list and not all(isinstance(v, str) for v in value))
        if wrong or (kind_ is str and not 0 < len(value) <= 256):
            what = "a list of strings" if kind_ is list else "a string of 1 to 256 characters"
            raise InvalidRequest(f"{param}.{name} must be {what}", param=f"{param}.{name}")
    for name, (_, required) in fields.items():
        if required and name not in given:
            raise InvalidRequest(f"{param}.{name} is required", param=f"{param}.{name}")
    uri = given.get("tracking_uri")
    if uri is not None and not uri.startswith(("http://", "https://", "databricks")):
        raise InvalidRequest(f"{param}.tracking_uri must be an MLflow server URL (http:// or https://); leave it "
                             "out for this platform's own store", param=f"{param}.tracking_uri")
    return dict(given)


def mlflow_tracking_uri(job: FineTuneJob) -> str:
    """The MLflow store a job reports to: its own ``tracking_uri``, else the operator's
    ``MLFLOW_TRACKING_URI``, else a SQLite store under the media directory."""
    own = _settings(job, "mlflow").get("tracking_uri")
    return own or settings.MLFLOW_TRACKING_URI or f"sqlite:///{Path(settings.MEDIA_ROOT) / 'mlflow' / 'mlflow.db'}"


def _settings(job: FineTuneJob, kind: str) -> dict:
    return next((i.get(kind) or {} for i in job.integrations or [] if i.get("type") == kind), {})


def job_trackers(job: FineTuneJob, workdir: Path) -> str:
    """The engine's ``TrainConfig.trackers`` for ``job`` (local directories under ``workdir``)."""
    trackers = []
    for integration in job.integrations or []:
        kind, given = integration["type"], integration.get(integration["type"]) or {}
        if kind == "tensorboard":
            trackers.append({"type": kind, "dir": str(workdir / "tensorboard")})
        elif kind == "mlflow":
            uri = mlflow_tracking_uri(job)
            if uri.startswith("sqlite:///"):
                Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            trackers.append({"type": kind, "tracking_uri": uri, "experiment": given.get("experiment")
                             or DEFAULT_EXPERIMENT})
        elif kind == "wandb":
            # offline (files under the work directory, kept with the job's files) unless the worker has a key
            online = bool(os.environ.get("WANDB_API_KEY"))
            trackers.append({"type": kind, "project": given["project"], "tags": given.get("tags") or [],
                             "dir": str(workdir / "wandb"), "mode": "online" if online else "offline",
                             **({"entity": given["entity"]} if given.get("entity") else {})})
    return json.dumps(trackers) if trackers else ""


def tensorboard_prefix(job: FineTuneJob) -> str:
    return f"jobs/{job.id}/tensorboard"


def job_tracking_store(job: FineTuneJob, workdir: Path) -> None:
    """Keep what the trackers wrote on the worker's disk (TensorBoard's event files, W&B's offline run)
    in the job's storage, before the work directory goes."""
    for name in ("tensorboard", "wandb"):
        if (workdir / name).is_dir():
            storage_put_dir(workdir / name, f"jobs/{job.id}/{name}")


def job_tracking(job: FineTuneJob) -> list[dict]:
    """Where each of a job's trackers holds its run: ``{type, location, url}`` (url None where there is
    no page to link to)."""
    out = []
    for integration in job.integrations or []:
        kind = integration["type"]
        if kind == "tensorboard":
            out.append({"type": kind, "location": tensorboard_prefix(job),
                        "url": f"/v1/fine_tuning/jobs/{job.id}/tensorboard"})
        elif kind == "mlflow":
            uri = mlflow_tracking_uri(job)
            experiment = _settings(job, "mlflow").get("experiment") or DEFAULT_EXPERIMENT
            out.append({"type": kind, "location": f"{uri} experiment {experiment}, run {job.id}",
                        "url": uri if uri.startswith(("http://", "https://")) else None})
        elif kind == "wandb":
            given = _settings(job, "wandb")
            out.append({"type": kind, "location": f"project {given.get('project')}, run {job.id} "
                                                  f"(offline runs are kept under jobs/{job.id}/wandb)",
                        "url": None})
    return out


def job_tensorboard_archive(job: FineTuneJob) -> bytes | None:
    """The job's TensorBoard event files as one .tar.gz (None when it wrote none)."""
    names = _storage_files(tensorboard_prefix(job))
    if not names:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in names:
            with default_storage.open(name, "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo(name.removeprefix(f"jobs/{job.id}/"))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _storage_files(prefix: str) -> list[str]:
    try:
        directories, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return []
    names = [f"{prefix}/{name}" for name in files]
    for directory in directories:
        names += _storage_files(f"{prefix}/{directory}")
    return sorted(names)
