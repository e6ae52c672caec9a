"""Plain functions that build valid test data; keyword arguments override the defaults."""

import io
import json
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

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


def make_usage(owner, *, minutes: float, devices: int = 1) -> FineTuneJob:
    """A finished job of ``owner`` that held ``devices`` for ``minutes`` just now (its account's fair-share
    usage; 500 tokens trained)."""
    job = make_job(owner, hyperparameters={"n_epochs": 1})
    now = timezone.now()
    FineTuneJob.objects.filter(pk=job.pk).update(
        status=FineTuneJob.Status.SUCCEEDED, started_at=now - timedelta(minutes=minutes), finished_at=now,
        trained_tokens=500, hyperparameters={**job.hyperparameters, "devices": devices})
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


CLASS_COLOURS = {"cats": (220, 60, 40), "dogs": (40, 160, 60), "birds": (40, 80, 220)}


def image_bytes(label: str = "cats", seed: int = 0, *, size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> bytes:
    """A small picture: a random 8×8 block pattern (so every seed hashes differently) with the class's
    coloured disc on it."""
    import random

    from PIL import Image, ImageDraw

    blocks = Image.frombytes("RGB", (8, 8), random.Random(f"{label}-{seed}").randbytes(8 * 8 * 3))
    image = blocks.resize(size, Image.Resampling.NEAREST)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2),
                                  fill=CLASS_COLOURS.get(label, (128, 128, 128)))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def image_set(classes: dict[str, int] | None = None, *, root: str = "") -> dict[str, bytes]:
    """``{path: bytes}`` of class folders of distinct images: 12 cats, 10 dogs and 8 birds by default."""
    classes = classes or {"cats": 12, "dogs": 10, "birds": 8}
    return {f"{root}{label}/{index:03d}.png": image_bytes(label, index)
            for label, count in classes.items() for index in range(count)}


def archive_bytes(files: dict[str, bytes], kind: str = "zip") -> bytes:
    """A ZIP (or a tar / tar.gz with ``kind="tar"``/``"tar.gz"``) of ``files``."""
    import tarfile
    import zipfile

    out = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                archive.writestr(name, data)
    else:
        with tarfile.open(fileobj=out, mode="w:gz" if kind == "tar.gz" else "w") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_vision_dataset(owner=None, *, files: dict[str, bytes] | None = None, name: str = "images.zip"):
    """A vision dataset uploaded and checked (what the queued task does), 3 classes by default."""
    from datasets_app.services import dataset_validate

    owner = owner or make_user()
    content = archive_bytes(files if files is not None else image_set())
    dataset = dataset_upload(owner=owner, upload=SimpleUploadedFile(name, content, content_type="application/zip"),
                             purpose="vision")
    return dataset_validate(dataset_id=dataset.id) or dataset


def make_stored_completion(owner=None, *, messages: list[dict] | None = None, answer: str = "Paris.",
                           metadata: dict | None = None, created: int | None = None):
    """A chat completion kept with ``store: true``, as the API keeps it after tiny-llama answered."""
    import time

    from finetune_site.ids import new_id
    from models_app.services import completion_store

    response = {"id": new_id("chatcmpl", 24), "created": created or int(time.time()),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop",
                             "logprobs": None}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    return completion_store(owner=owner or make_user(), model=base_model_builtin_ensure(), response=response,
                            messages=messages or [{"role": "user", "content": "The capital of France?"}],
                            request={"temperature": 0}, metadata=metadata or {})


def make_vision_model(owner=None, *, strategy: str = "native", evaluation: dict | None = None):
    """A model a succeeded ``native`` vision job made: an untrained 3-class classifier (cats, dogs, owls) on
    8-pixel images, stored as the worker stores one."""
    import tempfile
    from pathlib import Path

    from models_app.services import fine_tuned_model_create

    base_model_builtin_ensure()
    owner = owner or make_user()
    dataset = make_vision_dataset(owner)
    job = job_create(owner=owner, training_file=dataset.id, model="cnn", objective="vision",
                     hyperparameters={"strategy": "native", "n_epochs": 1}, suffix="pets")
    classes = ["cats", "dogs", "owls"]
    FineTuneJob.objects.filter(pk=job.pk).update(status="succeeded", vision={
        "strategy": strategy, "design": {"parameters": 1}, "best_epoch": 1, "epochs": 1,
        "evaluation": evaluation or {"images": 3, "accuracy": 1.0, "macro_f1": 1.0, "classes": classes,
                                     "per_class": [], "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}})
    job.refresh_from_db()
    with tempfile.TemporaryDirectory() as tmp:
        return fine_tuned_model_create(job=job, adapter_dir=classifier_write(Path(tmp) / "m", classes, strategy))


def classifier_write(path, classes: list[str], strategy: str = "native"):
    """An untrained classifier of ``classes`` on 8-pixel images at ``path``, saved as a vision run saves one."""
    import torch

    from workers.vision.classifier import classifier_save
    from workers.vision.modules import classifier_build
    from workers.vision.nets import native_design

    design = native_design(depth=1, width=4, dropout=0.0)
    torch.manual_seed(0)
    classifier_save(classifier_build(design, image_size=8, classes=len(classes), dropout=0.0), str(path),
                    meta={"design": design, "classes": classes, "image_size": 8, "strategy": strategy})
    return path


def make_backbone(path) -> str:
    """A vision backbone pretrained here on another task (the colour of a disc, 1 epoch), saved as a
    registered one is: what the ``transfer`` strategy fine-tunes."""
    import tempfile
    from pathlib import Path

    import torch

    from workers.vision.backbones import backbone_pretrain
    from workers.vision.data import images_load

    colours = list(CLASS_COLOURS)[:3]
    files = {f"{label}/{i}.png": image_bytes(label, i) for label in colours for i in range(20)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "discs.zip").write_bytes(archive_bytes(files))
        pixels = images_load(str(Path(tmp) / "discs.zip"), "discs.zip", list(files), 32)
    labels = torch.tensor([colours.index(name.split("/")[0]) for name in files])
    return str(backbone_pretrain(str(path), pixels, labels, classes=3, widths=(8, 16, 32), epochs=1,
                                 pretrained_on="coloured discs"))
