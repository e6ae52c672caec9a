"""Writes for datasets: upload (checked before anything is stored) and delete."""

import hashlib
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from datasets_app.models import Dataset
from finetune_site.errors import Conflict, InvalidRequest
from workers.data import jsonl_check

PURPOSES = {"fine-tune"}
EXTENSIONS = (".jsonl",)


def dataset_upload(*, owner, upload: UploadedFile, purpose: str = "fine-tune") -> Dataset:
    """Check an uploaded JSONL training file line by line and store it as a ready Dataset.

    Nothing is stored unless every line is valid; the error names the file and the lines.
    """
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {sorted(PURPOSES)}", param="purpose")
    filename = Path(upload.name or "").name
    if not filename.lower().endswith(EXTENSIONS):
        raise InvalidRequest(
            f"{filename or 'the file'}: only JSONL (.jsonl) training files are accepted; "
            "write one JSON object per line and name the file *.jsonl",
            param="file", code="invalid_file_format",
        )
    with tempfile.NamedTemporaryFile(dir=_tmp_dir(), suffix=".jsonl") as local:
        digest, size = _copy_hashing(upload, local)
        if size == 0:
            raise InvalidRequest(f"{filename}: the file is empty", param="file", code="empty_file")
        report = jsonl_check(Path(local.name), filename)
        if not report.ok:
            raise InvalidRequest(report.summary(), param="file", code="invalid_file")
        local.seek(0)
        return _dataset_store(owner, File(local, name=filename), filename, purpose, digest, size, report)


def _dataset_store(owner, file: File, filename, purpose, digest, size, report) -> Dataset:
    dataset = Dataset(
        owner=owner, filename=filename, purpose=purpose, format=report.format,
        status=Dataset.Status.READY, row_count=report.rows, byte_size=size, sha256=digest,
        validation_report=report.as_dict(),
    )
    dataset.file.save(filename, file, save=False)
    try:
        with transaction.atomic():
            dataset.save()
    except Exception:
        dataset.file.delete(save=False)
        raise
    return dataset


def _copy_hashing(upload: UploadedFile, sink) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
        if size > settings.MAX_UPLOAD_BYTES:
            raise InvalidRequest(
                f"{upload.name}: larger than the {settings.MAX_UPLOAD_BYTES} byte limit",
                param="file", code="file_too_large",
            )
        sink.write(chunk)
    sink.flush()
    return digest.hexdigest(), size


def _tmp_dir() -> str:
    path = Path(settings.FILE_UPLOAD_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its file; refused while a job uses it."""
    job = dataset.jobs.first() or dataset.validation_jobs.first()
    if job is not None:
        raise Conflict(f"{dataset.id} is used by {job.id}; delete the job's model first",
                       param="file_id", code="file_in_use")
    with transaction.atomic():
        dataset.delete()
    transaction.on_commit(lambda: dataset.file.delete(save=False))
