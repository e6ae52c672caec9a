"""Uploads: a whole file in one request, or a resumable upload in chunks; and deleting a dataset.

What is uploaded is stored as given and never modified. The sha256 is computed on the way in.
"""

import hashlib
import json
import re
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from accounts_app.selectors import project_acting
from datasets_app import tasks
from datasets_app.models import UPLOAD_TRANSITIONS, VISION_PURPOSE, Dataset, DatasetUpload
from datasets_app.services.files import files_delete, tmp_dir
from datasets_app.services.options import (
    dataset_options_clean,
    name_check,
    purpose_check,
    text_intent_check,
    text_intent_result,
    validate_config,
)
from datasets_app.services.validation import dataset_verdict_after, validation_fields
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import CHUNK
from finetune_site.status import status_transition
from workers.validate import ValidationResult, run_validation

Status = Dataset.Status
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A check made while the request waits stops at this many errors: a file of millions of bad rows would
# otherwise hold the web process for a minute, and the first hundred say what to fix.
INLINE_MAX_ERRORS = 100


def dataset_upload(*, owner, upload: UploadedFile, purpose: str = "fine-tune", options: dict | None = None,
                   ) -> Dataset:
    """Store an uploaded training file as a Dataset, hashing it on the way in.

    Files up to ``DATASET_INLINE_BYTES`` are validated here: a bad one raises ``InvalidRequest``
    naming file, line and field (the check stops at ``INLINE_MAX_ERRORS``), and nothing is stored.
    Larger files are stored as ``uploaded`` and the ``dataset_validate`` task checks them.
    """
    purpose_check(purpose)
    options = dataset_options_clean(**(options or {}))
    filename = Path(upload.name or "").name
    name_check(filename, options, purpose)
    text_intent_check(filename, options, purpose)
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as work:
        work_dir = Path(work)
        local = work_dir / "upload"
        with open(local, "wb") as sink:
            digest, size = _copy_hashing(upload, sink)
        if size == 0:
            raise InvalidRequest(f"{filename}: the file is empty", param="file", code="empty_file")
        result = None
        # An image archive is always checked by the task: decoding every image, and storing thumbnails
        if size <= settings.DATASET_INLINE_BYTES and purpose != VISION_PURPOSE:
            config = validate_config(local, filename, options, work_dir, max_errors=INLINE_MAX_ERRORS)
            result = text_intent_result(run_validation(config), filename, options)
            if not result.ok:
                raise InvalidRequest(result.summary, param="file", code="invalid_file")
        return dataset_store(owner=owner, local=local, filename=filename, purpose=purpose, sha256=digest,
                              size=size, options=options, result=result, work_dir=work_dir)


SAMPLE_FILES = (("sample-topics-train.jsonl", 48, 0), ("sample-topics-validation.jsonl", 16, 1))


def dataset_sample_create(*, owner) -> list[Dataset]:
    """The first-run tour's data: a small learnable set (classify a sentence as sports, food, weather or
    music; ``workers.sample_data``) and a validation set of other sentences, uploaded as any file is.
    The same files uploaded again are the same datasets (marked duplicates of the first)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from workers.sample_data import classification_rows

    made = []
    for name, rows, seed in SAMPLE_FILES:
        content = "".join(json.dumps(row) + "\n" for row in classification_rows(rows, seed=seed)).encode()
        made.append(dataset_upload(owner=owner, upload=SimpleUploadedFile(name, content)))
    return made


def dataset_store(*, owner, local: Path, filename: str, purpose: str, sha256: str, size: int, options: dict,
                   result: ValidationResult | None, work_dir: Path, parent: Dataset | None = None,
                   operations: list | None = None) -> Dataset:
    project_id = parent.project_id if parent is not None else project_acting(owner).id
    dataset = Dataset(owner=owner, project_id=project_id, filename=filename, purpose=purpose, options=options,
                      sha256=sha256, byte_size=size, parent=parent, operations=operations or [])
    dataset.duplicate_of = (Dataset.objects.filter(project_id=project_id, sha256=sha256).order_by("created_at")
                            .first())
    if result is not None:
        for name, value in validation_fields(result).items():
            setattr(dataset, name, value)
    with open(local, "rb") as handle:
        dataset.file.save(filename, File(handle, name=filename), save=False)
    try:
        if result is not None and result.normalised:
            with open(work_dir / "train.jsonl", "rb") as handle:
                dataset.training_file.save("train.jsonl", File(handle, name="train.jsonl"), save=False)
        with transaction.atomic():
            dataset.save()
            if dataset.status == Status.UPLOADED:
                transaction.on_commit(lambda: tasks.dataset_validate.delay(dataset.id))
            else:
                dataset_verdict_after(dataset)
    except BaseException:
        files_delete(dataset)
        raise
    return dataset


def _copy_hashing(upload, sink) -> tuple[str, int]:
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


def upload_create(*, owner, filename: str, purpose: str = "fine-tune", options: dict | None = None,
                  bytes: int | None = None, sha256: str = "") -> DatasetUpload:
    """Open a resumable upload. With ``sha256`` of content the owner already uploaded (same options),
    the upload is born completed on that dataset and no byte needs sending."""
    purpose_check(purpose)
    options = dataset_options_clean(**(options or {}))
    filename = Path(filename or "").name
    name_check(filename, options, purpose)
    text_intent_check(filename, options, purpose)
    if bytes is not None and not 0 < bytes <= settings.MAX_UPLOAD_BYTES:
        raise InvalidRequest(f"bytes must be from 1 to {settings.MAX_UPLOAD_BYTES}", param="bytes")
    sha256 = (sha256 or "").lower()
    if sha256 and not _SHA256.match(sha256):
        raise InvalidRequest("sha256 must be 64 hexadecimal digits", param="sha256")
    if sha256:
        existing = Dataset.objects.filter(project=project_acting(owner), sha256=sha256, options=options).exclude(
            status=Status.INVALID).order_by("created_at").first()
        if existing is not None:
            return DatasetUpload.objects.create(
                owner=owner, project=existing.project, filename=filename, purpose=purpose, options=options,
                expected_bytes=existing.byte_size,
                expected_sha256=sha256, received=existing.byte_size, status=DatasetUpload.Status.COMPLETED,
                dataset=existing)
    upload = DatasetUpload.objects.create(owner=owner, project=project_acting(owner), filename=filename,
                                          purpose=purpose, options=options,
                                          expected_bytes=bytes, expected_sha256=sha256)
    _part_path(upload).parent.mkdir(parents=True, exist_ok=True)
    _part_path(upload).touch()
    return upload


def _part_path(upload: DatasetUpload) -> Path:
    return Path(settings.DATASET_UPLOAD_DIR) / f"{upload.id}.part"


def _open_check(upload: DatasetUpload) -> None:
    if upload.status != DatasetUpload.Status.OPEN:
        raise Conflict(f"{upload.id} is {upload.status}; start a new upload", param="upload_id",
                       code="upload_closed")


def upload_chunk_append(*, upload_id: str, owner, offset: int, stream, chunk_sha256: str = "") -> DatasetUpload:
    """Append the bytes of ``stream`` at ``offset``, which must be what the server has received.

    A chunk that breaks a limit or whose ``chunk_sha256`` does not match is dropped whole: the
    upload stays at its previous offset, ready for the chunk to be sent again.
    """
    with transaction.atomic():  # the row lock keeps two requests from writing the same upload
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, project=project_acting(owner)).first()
        if upload is None:
            raise InvalidRequest(f"No such upload: {upload_id}", param="upload_id", code="not_found")
        _open_check(upload)
        if offset != upload.received:  # chunks go in order: the running sha256 cannot skip or rewind
            raise Conflict(f"offset {offset} is not where the upload stands; chunks are appended in order, send "
                           f"the bytes from offset {upload.received}", param="offset", code="offset_mismatch")
        limit = settings.DATASET_UPLOAD_CHUNK_MAX
        if upload.expected_bytes is not None:
            limit = min(limit, upload.expected_bytes - upload.received)
        digest, written, whole = hashlib.sha256(), 0, _upload_hasher(upload)
        with open(_part_path(upload), "r+b") as part:
            part.seek(upload.received)
            part.truncate()  # drop whatever a broken earlier request left past the offset
            try:
                while True:
                    block = stream.read(CHUNK) if stream is not None else b""
                    if not block:
                        break
                    written += len(block)
                    if written > limit or upload.received + written > settings.MAX_UPLOAD_BYTES:
                        raise InvalidRequest(f"the chunk goes past the {limit} bytes this upload accepts now",
                                             param="chunk", code="chunk_too_large")
                    digest.update(block)
                    whole.update(block)
                    part.write(block)
                if chunk_sha256 and digest.hexdigest() != chunk_sha256.lower():
                    raise InvalidRequest("the chunk's sha256 does not match; send it again", param="chunk_sha256",
                                         code="chunk_corrupt")
            except BaseException:
                part.truncate(upload.received)
                raise
        upload.received += written
        upload.hash_state = whole.serialize()  # saved with ``received``: the two always describe the same bytes
        upload.save(update_fields=["received", "hash_state", "updated_at"])
    return upload


def _upload_hasher(upload: DatasetUpload):
    """The running sha256 of the upload's first ``received`` bytes, as the last chunk left it."""
    from rehashes import PySha256

    if upload.hash_state:
        return PySha256.deserialize(bytes(upload.hash_state))
    hasher = PySha256()
    if upload.received:  # opened before the state was kept on the row: catch up once from the part file
        with open(_part_path(upload), "rb") as handle:
            remaining = upload.received
            while remaining and (block := handle.read(min(CHUNK, remaining))):
                hasher.update(block)
                remaining -= len(block)
    return hasher


def upload_complete(*, upload_id: str, owner, sha256: str = "") -> DatasetUpload:
    """Store the assembled file as a Dataset and queue its check.

    The sha256 was computed as the chunks arrived (the file is not read again to hash it) and must
    match the one given here or at creation; a mismatch keeps the upload open and stores nothing.
    Content the owner already has is stored all the same, marked ``duplicate_of`` the first copy.
    """
    with transaction.atomic():
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, project=project_acting(owner)).first()
        if upload is None:
            raise InvalidRequest(f"No such upload: {upload_id}", param="upload_id", code="not_found")
        if upload.status == DatasetUpload.Status.COMPLETED:
            return upload  # completing twice is harmless
        _open_check(upload)
        if upload.received == 0:
            raise InvalidRequest(f"{upload.filename}: the file is empty", param="file", code="empty_file")
        if upload.expected_bytes is not None and upload.received != upload.expected_bytes:
            raise InvalidRequest(f"received {upload.received} of {upload.expected_bytes} bytes; send the rest from "
                                 f"offset {upload.received}", param="offset", code="upload_incomplete")
        expected = (sha256 or upload.expected_sha256).lower()
        part = _part_path(upload)
        digest = _upload_hasher(upload).finalize()
        if expected and digest != expected:
            raise InvalidRequest(f"the received bytes have sha256 {digest}, not {expected}; cancel the upload and "
                                 "send the file again", param="sha256", code="sha256_mismatch")
        dataset = dataset_store(owner=owner, local=part, filename=upload.filename, purpose=upload.purpose,
                                 sha256=digest, size=upload.received, options=upload.options, result=None,
                                 work_dir=part.parent)
        upload = status_transition(DatasetUpload, upload.id, DatasetUpload.Status.COMPLETED, rules=UPLOAD_TRANSITIONS,
                                   dataset=dataset, updated_at=timezone.now())
        transaction.on_commit(lambda: part.unlink(missing_ok=True))
    return upload


def upload_cancel(*, upload_id: str, owner) -> DatasetUpload:
    """Abandon an open upload and free its space."""
    with transaction.atomic():
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, project=project_acting(owner)).first()
        if upload is None:
            raise InvalidRequest(f"No such upload: {upload_id}", param="upload_id", code="not_found")
        _open_check(upload)
        upload = status_transition(DatasetUpload, upload.id, DatasetUpload.Status.CANCELLED, rules=UPLOAD_TRANSITIONS,
                                   updated_at=timezone.now())
        transaction.on_commit(lambda: _part_path(upload).unlink(missing_ok=True))
    return upload


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its files; refused while a job or an evaluation uses it."""
    try:
        with transaction.atomic():
            dataset.delete()
    except ProtectedError as refused:
        user = next(iter(refused.protected_objects))
        raise Conflict(f"{dataset.id} is used by {user._meta.verbose_name} {user.pk}; delete that first",
                       param="file_id", code="file_in_use") from None
    transaction.on_commit(lambda: files_delete(dataset))
