"""Plain functions that build valid test data; keyword arguments override the defaults."""

import io
import json

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.services import dataset_upload
from jobs_app.models import FineTuneJob
from jobs_app.services import job_create
from models_app.base_models.services import base_model_builtin_ensure
from workers.sample_data import classification_rows

_counter = iter(range(1, 1_000_000))


def make_user(username: str | None = None, **fields):
    username = username or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=username, password="pw-" + username, **fields)


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def make_upload(content: bytes | None = None, name: str = "train.jsonl") -> SimpleUploadedFile:
    content = jsonl_bytes(classification_rows(16)) if content is None else content
    return SimpleUploadedFile(name, content, content_type="application/jsonl")


def make_dataset(owner=None, *, rows: list[dict] | None = None, name: str = "train.jsonl"):
    owner = owner or make_user()
    content = jsonl_bytes(rows if rows is not None else classification_rows(16))
    return dataset_upload(owner=owner, upload=make_upload(content, name))


def make_job(owner=None, *, dataset=None, status: str | None = None, hyperparameters=None, **fields) -> FineTuneJob:
    """A job created through the service; ``status`` forces a state without running it. Other keyword
    arguments (``suffix``, ``version``, ...) go to ``job_create``."""
    base_model_builtin_ensure()
    owner = owner or (dataset.owner if dataset else make_user())
    dataset = dataset or make_dataset(owner)
    job = job_create(owner=owner, training_file=dataset.id, model="tiny-llama",
                     hyperparameters=hyperparameters or {}, **fields)
    if status:
        FineTuneJob.objects.filter(pk=job.pk).update(status=status)
        job.refresh_from_db()
    return job


def file_like(content: bytes, name: str) -> io.BytesIO:
    handle = io.BytesIO(content)
    handle.name = name
    return handle


def make_metric(job, step: int, total_steps: int = 10, **values):
    """A metric event as the worker reports it (train loss, learning rate, tokens at ``step``)."""
    from jobs_app.services import job_event_add

    data = {"step": step, "total_steps": total_steps, "train_loss": 2.0 / step, "learning_rate": 1e-3,
            "tokens": 100 * step, **values}
    return job_event_add(job_id=job.id, type="metrics", data=data,
                         message=f"Step {step}/{total_steps}: train loss={data['train_loss']:.4g}")
