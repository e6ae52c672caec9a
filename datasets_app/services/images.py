"""Vision datasets (``purpose="vision"``): checking an uploaded archive of labelled images with
``workers.images``, storing its manifest and thumbnails, and its stratified train/validation split.

The archive is stored as uploaded and only read. A check stores, next to it, ``normalised/manifest.jsonl``
(one ``{"image", "label"[, "split"]}`` per usable image: the dataset's rows) and a few thumbnails per
class for the report page; ``Dataset.stats`` holds the class counts, sizes, modes, duplicates, split and
the thumbnails' storage names.
"""

import re
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from datasets_app import tasks
from datasets_app.models import Dataset
from datasets_app.services.options import image_config
from finetune_site.errors import Conflict, InvalidRequest
from workers.images import ImageResult, run_image_validation
from workers.prepare import PrepareError, operations_check

Status = Dataset.Status
NAME_BYTES = 255


def dataset_split_op(dataset: Dataset) -> dict | None:
    """The split operation that made this version, if any (its share and seed decide each image's part)."""
    return next((op for op in dataset.operations or [] if op.get("op") == "split"), None)


def dataset_images_check(*, dataset: Dataset, local: Path, work_dir: Path, emit) -> tuple[ImageResult, dict]:
    """Check a vision dataset's archive at ``local`` and store what its page and the trainer read: the
    manifest and the thumbnails. Returns the result and the fields its verdict sets on the dataset."""
    result = run_image_validation(image_config(local, dataset.filename, work_dir, split=dataset_split_op(dataset)),
                                  emit)
    out = work_dir / "out"
    stats = dict(result.stats)
    thumbnails = []
    for thumbnail in result.thumbnails:
        with open(out / thumbnail["file"], "rb") as handle:
            name = default_storage.save(f"datasets/{dataset.id}/{thumbnail['file']}",
                                        File(handle, name=Path(thumbnail["file"]).name))
        thumbnails.append({"label": thumbnail["label"], "image": thumbnail["image"], "name": name})
    stats["thumbnails"] = thumbnails
    fields = {"status": Status.READY if result.ok else Status.INVALID, "container": result.container,
              "format": Dataset.Format.IMAGE_CLASSIFICATION, "row_count": result.images,
              "validation_report": result.report, "stats": stats, "progress": 1.0, "validated_at": timezone.now()}
    if result.ok:
        with open(out / "manifest.jsonl", "rb") as handle:
            fields["training_file"] = default_storage.save(f"datasets/{dataset.id}/normalised/manifest.jsonl",
                                                           File(handle, name="manifest.jsonl"))
    return result, fields


def dataset_images_split(*, dataset: Dataset, operations: list) -> list[Dataset]:
    """A new version of a ready vision dataset whose every image is assigned to train or validation,
    stratified per class (``[{"op": "split", "validation_share": 0.2, "seed": 42}]``). The version holds
    a copy of the archive and is checked again by the task, which reports duplicates across the parts."""
    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; only a ready dataset can be prepared", param="file_id",
                       code="dataset_not_ready")
    if not isinstance(operations, list) or len(operations) != 1 or not isinstance(operations[0], dict) \
            or operations[0].get("op") != "split":
        raise InvalidRequest('a vision dataset is prepared with one operation, {"op": "split", "validation_share": '
                             '0.2}: a stratified train/validation split', param="operations")
    try:
        operations = operations_check(operations, dataset.format)
    except PrepareError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from exc
    operations[0]["stratify"] = "label"
    number = dataset.versions.count() + 2  # the parent is version 1
    filename = _version_filename(dataset.filename, number)
    version = Dataset(owner=dataset.owner, project_id=dataset.project_id, filename=filename, purpose=dataset.purpose,
                      sha256=dataset.sha256,
                      byte_size=dataset.byte_size, parent=dataset, operations=operations, options=dataset.options)
    with dataset.file.open("rb") as source:
        version.file.save(filename, File(source, name=filename), save=False)  # streamed copy: versions stand alone
    try:
        with transaction.atomic():
            version.save()
            transaction.on_commit(lambda: tasks.dataset_validate.delay(version.id))
    except BaseException:
        version.file.delete(save=False)
        raise
    return [version]


def _version_filename(filename: str, number: int) -> str:
    """``photos.v2.zip`` for ``photos.zip`` (``.tar.gz`` kept whole)."""
    lower = filename.lower()
    suffix = next((s for s in (".tar.gz", ".tgz", ".tar", ".zip") if lower.endswith(s)), "")
    stem = re.sub(r"\.v\d+$", "", filename[: len(filename) - len(suffix)])
    tail = f".v{number}{suffix}"
    return stem.encode()[: NAME_BYTES - len(tail)].decode("utf-8", "ignore") + tail
