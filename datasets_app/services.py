"""Writes for datasets: upload, validation, resumable uploads, re-validation and delete.

Only this module writes ``Dataset.status``, through ``_dataset_transition`` and the
``DATASET_TRANSITIONS`` table. What is uploaded is stored as given and never modified.
"""

import hashlib
import json
import logging
import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from datasets_app.broadcast import dataset_publish
from datasets_app.models import DATASET_TRANSITIONS, Dataset, DatasetUpload, TokenStats
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import CHUNK, storage_fetch, storage_is_s3
from workers.containers import CONTAINERS, Limits, container_from_name
from workers.events import ValidationProgress
from workers.formats import FORMATS
from workers.report import Issue, Report
from workers.templates import TEMPLATE_NAMES
from workers.validate import ValidateConfig, ValidationResult, run_validation

log = logging.getLogger(__name__)
Status = Dataset.Status
PURPOSES = {"fine-tune"}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, or a .zip/.gz holding one of them"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PROGRESS_STEP = 0.01


# --- options ----------------------------------------------------------------------------------

def dataset_options_clean(*, container: str | None = None, format: str | None = None,
                          column_map=None) -> dict:
    """Check the reading options a caller gave; return only those set."""
    options: dict = {}
    if container:
        if container not in CONTAINERS:
            raise InvalidRequest(f"container must be one of {', '.join(CONTAINERS)}", param="container")
        options["container"] = container
    if format:
        if format not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
        options["format"] = format
    mapping = column_map_parse(column_map)
    if mapping:
        options["column_map"] = mapping
    return options


def column_map_parse(raw) -> dict[str, str]:
    """A column mapping from a dict, a JSON object, or text like ``question→prompt, answer:completion``."""
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise InvalidRequest(f"column_map is not valid JSON ({exc})", param="column_map") from exc
        else:
            raw = {}
            for pair in filter(None, (p.strip() for p in re.split(r"[,\n]", text))):
                parts = re.split(r"\s*(?:→|->|=>|:|=)\s*", pair, maxsplit=1)
                if len(parts) != 2:
                    raise InvalidRequest(f"column_map: {pair!r} is not source→target", param="column_map")
                raw[parts[0]] = parts[1]
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip()
                                            for k, v in raw.items()):
        raise InvalidRequest('column_map must map column names to field names, e.g. {"question": "prompt"}',
                             param="column_map")
    return {k.strip(): v.strip() for k, v in raw.items()}


def _name_check(filename: str, options: dict) -> None:
    if not filename:
        raise InvalidRequest("the file has no name; name it after what it holds, e.g. train.jsonl", param="file")
    if not options.get("container") and not container_from_name(filename):
        raise InvalidRequest(f"{filename}: not a training file type we read; upload {SUPPORTED} "
                             "(or give container=...)", param="file", code="invalid_file_format")


def _purpose_check(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {sorted(PURPOSES)}", param="purpose")


def _limits() -> Limits:
    return Limits(
        max_line_bytes=settings.DATASET_MAX_LINE_BYTES, max_field_bytes=settings.DATASET_MAX_FIELD_BYTES,
        max_depth=settings.DATASET_MAX_DEPTH, max_uncompressed_bytes=settings.DATASET_MAX_UNCOMPRESSED_BYTES,
        max_ratio=settings.DATASET_MAX_COMPRESSION_RATIO, max_row_group_bytes=settings.DATASET_MAX_ROW_GROUP_BYTES,
    )


def _validate_config(path: Path, filename: str, options: dict, work_dir: Path) -> ValidateConfig:
    return ValidateConfig(
        path=str(path), filename=filename, output_path=str(work_dir / "train.jsonl"), work_dir=str(work_dir),
        container=options.get("container", ""), format=options.get("format", ""),
        column_map=tuple(options.get("column_map", {}).items()), limits=_limits(),
    )


# --- upload -------------------------------------------------------------------------------------

def dataset_upload(*, owner, upload: UploadedFile, purpose: str = "fine-tune", options: dict | None = None,
                   ) -> Dataset:
    """Store an uploaded training file as a Dataset, hashing it on the way in.

    Files up to ``DATASET_INLINE_BYTES`` are validated here: a bad one raises ``InvalidRequest``
    naming file, line and field, and nothing is stored. Larger files are stored as ``uploaded``
    and the ``dataset_validate`` task checks them.
    """
    _purpose_check(purpose)
    options = dataset_options_clean(**(options or {}))
    filename = Path(upload.name or "").name
    _name_check(filename, options)
    with tempfile.TemporaryDirectory(dir=_tmp_dir()) as work:
        work_dir = Path(work)
        local = work_dir / "upload"
        with open(local, "wb") as sink:
            digest, size = _copy_hashing(upload, sink)
        if size == 0:
            raise InvalidRequest(f"{filename}: the file is empty", param="file", code="empty_file")
        result = None
        if size <= settings.DATASET_INLINE_BYTES:
            result = run_validation(_validate_config(local, filename, options, work_dir))
            if not result.ok:
                raise InvalidRequest(result.summary, param="file", code="invalid_file")
        return _dataset_store(owner=owner, local=local, filename=filename, purpose=purpose, sha256=digest,
                              size=size, options=options, result=result, work_dir=work_dir)


def _dataset_store(*, owner, local: Path, filename: str, purpose: str, sha256: str, size: int, options: dict,
                   result: ValidationResult | None, work_dir: Path, parent: Dataset | None = None,
                   operations: list | None = None) -> Dataset:
    dataset = Dataset(owner=owner, filename=filename, purpose=purpose, options=options, sha256=sha256,
                      byte_size=size, parent=parent, operations=operations or [])
    dataset.duplicate_of = (Dataset.objects.filter(owner=owner, sha256=sha256).order_by("created_at").first())
    if result is not None:
        _result_apply(dataset, result)
    with open(local, "rb") as handle:
        dataset.file.save(filename, File(handle, name=filename), save=False)
    try:
        if result is not None and result.normalised:
            with open(work_dir / "train.jsonl", "rb") as handle:
                dataset.training_file.save("train.jsonl", File(handle, name="train.jsonl"), save=False)
        with transaction.atomic():
            dataset.save()
            if dataset.status == Status.UPLOADED:
                transaction.on_commit(lambda: _dataset_validate_task().delay(dataset.id))
            elif dataset.status == Status.READY:
                transaction.on_commit(lambda: _dataset_quality_task().delay(dataset.id))
    except BaseException:
        _files_delete(dataset)
        raise
    return dataset


def _result_apply(dataset: Dataset, result: ValidationResult) -> None:
    dataset.status = Status.READY if result.ok else Status.INVALID
    dataset.format = result.format
    dataset.container = result.container
    dataset.row_count = result.rows
    dataset.validation_report = result.report
    dataset.progress = 1.0
    dataset.validated_at = timezone.now()


def _files_delete(dataset: Dataset) -> None:
    for field in (dataset.file, dataset.training_file):
        if field.name:
            try:
                field.delete(save=False)
            except Exception:  # storage hiccup: an orphan file is better than a hidden original error
                log.warning("could not delete %s", field.name, exc_info=True)


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


def _tmp_dir() -> str:
    path = Path(settings.FILE_UPLOAD_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


# --- status -------------------------------------------------------------------------------------

def _dataset_transition(*, dataset_id: str, to: str, **fields) -> Dataset:
    """Move a dataset to ``to`` if ``DATASET_TRANSITIONS`` permits: lock, save, publish after commit."""
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset_id)
        if to not in DATASET_TRANSITIONS[dataset.status]:
            raise Conflict(f"{dataset_id} is {dataset.status} and cannot become {to}", param="file_id",
                           code="invalid_transition")
        dataset.status = to
        for name, value in fields.items():
            setattr(dataset, name, value)
        dataset.save(update_fields=["status", *fields])
        dataset_publish(dataset_id, {"status": to, "progress": dataset.progress})
    return dataset


def dataset_validate(*, dataset_id: str) -> Dataset | None:
    """Check a stored dataset (the ``dataset_validate`` task): ``uploaded → validating → ready | invalid``.

    The original file is only read. The normalised rows, when needed, are stored next to it before
    the dataset becomes ready, so a ready dataset always has everything the trainer reads.
    """
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().filter(pk=dataset_id).first()
        if dataset is None or dataset.status not in (Status.UPLOADED, Status.VALIDATING):
            return None  # deleted, or already checked by an earlier delivery of the task
        dataset = _dataset_transition(dataset_id=dataset_id, to=Status.VALIDATING, progress=0.0)
    work_dir = Path(settings.WORK_DIR) / "datasets" / f"{dataset.id}-{timezone.now().timestamp():.0f}"
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        local = _local_path(dataset, work_dir)
        result = run_validation(_validate_config(local, dataset.filename, dataset.options, work_dir),
                                _ProgressWriter(dataset.id))
        training_name = ""
        if result.ok and result.normalised:
            name = f"datasets/{dataset.id}/normalised/train.jsonl"
            with open(work_dir / "train.jsonl", "rb") as handle:
                training_name = default_storage.save(name, File(handle, name="train.jsonl"))
        return _validation_finish(dataset, result, training_name)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _local_path(dataset: Dataset, work_dir: Path) -> Path:
    """A local path to the stored file: the file itself on local disk, a streamed copy from S3."""
    if not storage_is_s3():
        return Path(default_storage.path(dataset.file.name))
    return storage_fetch(dataset.file.name, work_dir / "source")


def _validation_finish(dataset: Dataset, result: ValidationResult, training_name: str) -> Dataset | None:
    with transaction.atomic():
        current = Dataset.objects.select_for_update().filter(pk=dataset.id).first()
        if current is None or current.status != Status.VALIDATING:
            if training_name:  # deleted or reset meanwhile: leave nothing behind
                transaction.on_commit(lambda: default_storage.delete(training_name))
            return None
        _result_apply(current, result)
        fields = dict(format=current.format, container=current.container, row_count=current.row_count,
                      validation_report=current.validation_report, progress=1.0, validated_at=current.validated_at,
                      training_file=training_name)
        finished = _dataset_transition(dataset_id=dataset.id, to=current.status, **fields)
        transaction.on_commit(lambda: _jobs_recheck(dataset.id))
        if finished.status == Status.READY:
            transaction.on_commit(lambda: _dataset_quality_task().delay(dataset.id))
    return finished


def dataset_fail(*, dataset_id: str, message: str) -> None:
    """Mark a dataset whose check crashed ``invalid``, with a report that says so (the file is kept)."""
    report = Report(Dataset.objects.filter(pk=dataset_id).values_list("filename", flat=True).first() or "")
    report.add(Issue("internal_error", f"the check stopped unexpectedly ({message[:500]})",
                     "validate it again (POST /v1/datasets/{id}/validate); if it fails again, report it"))
    try:
        _dataset_transition(dataset_id=dataset_id, to=Status.INVALID, validation_report=report.as_dict(),
                            validated_at=timezone.now())
    except (Conflict, Dataset.DoesNotExist):
        pass
    transaction.on_commit(lambda: _jobs_recheck(dataset_id))


def dataset_revalidate(*, dataset: Dataset, options: dict) -> Dataset:
    """Check an invalid dataset again with other options (container, format, column_map)."""
    options = dataset_options_clean(**options)
    if dataset.status != Status.INVALID:
        raise Conflict(f"{dataset.id} is {dataset.status}; only an invalid dataset is checked again (prepare a "
                       "new version of a ready one)", param="file_id", code="invalid_transition")
    with transaction.atomic():
        dataset = _dataset_transition(dataset_id=dataset.id, to=Status.UPLOADED, options=options, progress=0.0,
                                      validation_report={}, format="", row_count=0)
        transaction.on_commit(lambda: _dataset_validate_task().delay(dataset.id))
    return dataset


class _ProgressWriter:
    """The validator's ``emit``: progress in the row (every 1%) and to websocket subscribers."""

    def __init__(self, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.last = 0.0

    def __call__(self, event) -> None:
        if not isinstance(event, ValidationProgress) or not event.bytes_total:
            return
        share = min(event.bytes_done / event.bytes_total, 1.0)
        if share - self.last < PROGRESS_STEP and share < 1.0:
            return
        self.last = share
        Dataset.objects.filter(pk=self.dataset_id, status=Status.VALIDATING).update(progress=share)
        dataset_publish(self.dataset_id, {"status": Status.VALIDATING, "progress": share, "rows": event.rows})


def _jobs_recheck(dataset_id: str) -> None:
    """Jobs waiting for this dataset's check go on (or fail) now that it has a verdict."""
    from jobs_app.models import FineTuneJob
    from jobs_app.tasks import job_validate as job_validate_task

    waiting = FineTuneJob.objects.filter(status=FineTuneJob.Status.VALIDATING_FILES).filter(
        Q(dataset_id=dataset_id) | Q(validation_dataset_id=dataset_id))
    for job_id in waiting.values_list("id", flat=True):
        job_validate_task.delay(job_id)


# --- resumable uploads --------------------------------------------------------------------------

def upload_create(*, owner, filename: str, purpose: str = "fine-tune", options: dict | None = None,
                  bytes: int | None = None, sha256: str = "") -> DatasetUpload:
    """Open a resumable upload. With ``sha256`` of content the owner already uploaded (same options),
    the upload is born completed on that dataset and no byte needs sending."""
    _purpose_check(purpose)
    options = dataset_options_clean(**(options or {}))
    filename = Path(filename or "").name
    _name_check(filename, options)
    if bytes is not None and not 0 < bytes <= settings.MAX_UPLOAD_BYTES:
        raise InvalidRequest(f"bytes must be from 1 to {settings.MAX_UPLOAD_BYTES}", param="bytes")
    sha256 = (sha256 or "").lower()
    if sha256 and not _SHA256.match(sha256):
        raise InvalidRequest("sha256 must be 64 hexadecimal digits", param="sha256")
    if sha256:
        existing = Dataset.objects.filter(owner=owner, sha256=sha256, options=options).exclude(
            status=Status.INVALID).order_by("created_at").first()
        if existing is not None:
            return DatasetUpload.objects.create(
                owner=owner, filename=filename, purpose=purpose, options=options, expected_bytes=existing.byte_size,
                expected_sha256=sha256, received=existing.byte_size, status=DatasetUpload.Status.COMPLETED,
                dataset=existing)
    upload = DatasetUpload.objects.create(owner=owner, filename=filename, purpose=purpose, options=options,
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
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, owner=owner).first()
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
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, owner=owner).first()
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
        dataset = _dataset_store(owner=owner, local=part, filename=upload.filename, purpose=upload.purpose,
                                 sha256=digest, size=upload.received, options=upload.options, result=None,
                                 work_dir=part.parent)
        upload.status, upload.dataset = DatasetUpload.Status.COMPLETED, dataset
        upload.save(update_fields=["status", "dataset", "updated_at"])
        transaction.on_commit(lambda: part.unlink(missing_ok=True))
    return upload


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def upload_cancel(*, upload_id: str, owner) -> DatasetUpload:
    """Abandon an open upload and free its space."""
    with transaction.atomic():
        upload = DatasetUpload.objects.select_for_update().filter(pk=upload_id, owner=owner).first()
        if upload is None:
            raise InvalidRequest(f"No such upload: {upload_id}", param="upload_id", code="not_found")
        _open_check(upload)
        upload.status = DatasetUpload.Status.CANCELLED
        upload.save(update_fields=["status", "updated_at"])
        transaction.on_commit(lambda: _part_path(upload).unlink(missing_ok=True))
    return upload


# --- delete -------------------------------------------------------------------------------------

def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its files; refused while a job uses it."""
    job = dataset.jobs.first() or dataset.validation_jobs.first()
    if job is not None:
        raise Conflict(f"{dataset.id} is used by {job.id}; delete the job's model first",
                       param="file_id", code="file_in_use")
    with transaction.atomic():
        dataset.delete()
    transaction.on_commit(lambda: _files_delete(dataset))


# --- token statistics ------------------------------------------------------------------------------

STATS_STALE = timedelta(minutes=15)


def _stats_key(dataset: Dataset, base_model, template: str) -> dict:
    options = json.dumps(dataset.options or {}, sort_keys=True)
    return {"sha256": dataset.sha256, "options_key": hashlib.sha256(options.encode()).hexdigest(),
            "tokenizer": base_model.source, "template": template}


def _stats_check(dataset: Dataset, template: str) -> None:
    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; statistics need a ready dataset", param="file_id",
                       code="dataset_not_ready")
    if not dataset.training_format:
        raise InvalidRequest(f"{dataset.id} holds {dataset.format} rows, which supervised training does not read",
                             param="file_id", code="unsupported_format")
    if template not in TEMPLATE_NAMES:
        raise InvalidRequest(f"template must be one of {', '.join(repr(t) for t in TEMPLATE_NAMES)}",
                             param="template")


def token_stats_request(*, dataset: Dataset, base_model, template: str = "") -> TokenStats:
    """The cached token counts of ``dataset`` under ``base_model``'s tokenizer and ``template``,
    or a ``computing`` row with the ``dataset_stats`` task queued (once) to fill it."""
    _stats_check(dataset, template)
    stats, created = TokenStats.objects.get_or_create(**_stats_key(dataset, base_model, template))
    stale = stats.status == TokenStats.Status.COMPUTING and stats.updated_at < timezone.now() - STATS_STALE
    if created or stale or stats.status == TokenStats.Status.FAILED:
        TokenStats.objects.filter(pk=stats.pk).update(status=TokenStats.Status.COMPUTING, updated_at=timezone.now())
        stats.status = TokenStats.Status.COMPUTING
        transaction.on_commit(lambda: _dataset_stats_task().delay(dataset.id, base_model.name, template))
    return stats


def token_stats_compute(*, dataset_id: str, model: str, template: str = "") -> TokenStats | None:
    """Tokenize the dataset's rows as the trainer will (the ``dataset_stats`` task; jobs call it too).

    Cached: a second call with the same content, tokenizer and template returns the stored counts.
    """
    from models_app.models import BaseModel
    from models_app.services import base_model_local_path
    from workers.stats import StatsConfig, token_lengths

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    base = BaseModel.objects.filter(name=model).first()
    if dataset is None or base is None:
        return None
    _stats_check(dataset, template)
    stats, _ = TokenStats.objects.get_or_create(**_stats_key(dataset, base, template))
    if stats.status == TokenStats.Status.READY:
        return stats
    work_dir = Path(settings.WORK_DIR) / "stats" / f"{dataset.id}-{timezone.now().timestamp():.0f}"
    try:
        local = storage_fetch(dataset.training_file_name, work_dir / "train.jsonl")
        config = StatsConfig(path=str(local), format=dataset.training_format, template=template,
                             tokenizer_path=base_model_local_path(base), total_rows=dataset.row_count)
        lengths = token_lengths(config)
    except Exception as exc:
        TokenStats.objects.filter(pk=stats.pk).update(status=TokenStats.Status.FAILED, error=str(exc)[:2000])
        dataset_publish(dataset.id, {"status": dataset.status, "stats": TokenStats.Status.FAILED})
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    stride = max(1, -(-dataset.row_count // config.max_rows)) if dataset.row_count else 1
    TokenStats.objects.filter(pk=stats.pk).update(
        status=TokenStats.Status.READY, rows=lengths.rows, stride=stride, sampled=lengths.sampled,
        totals=lengths.totals, targets=lengths.targets, structure=lengths.structure, errors=lengths.errors, error="")
    stats.refresh_from_db()
    summary = token_stats_summary(stats, max_length=min(1024, base.context_length), context_length=base.context_length)
    if not template:  # the dataset's page shows the model's own template; a job's other template stays in the cache
        Dataset.objects.filter(pk=dataset.id).update(stats={"model": model, "template": template, **summary})
    dataset_publish(dataset.id, {"status": dataset.status, "stats": TokenStats.Status.READY})  # an open page fills in
    return stats


def token_stats_summary(stats: TokenStats, *, max_length: int, context_length: int | None = None) -> dict:
    """Histograms, truncation and the suggested ``max_length`` for ``max_length`` (no tokenizing)."""
    from workers.stats import TokenLengths, length_summary

    lengths = TokenLengths(totals=stats.totals, targets=stats.targets, rows=stats.rows, sampled=stats.sampled,
                           structure=stats.structure, errors=stats.errors)
    summary = length_summary(lengths, max_length=max_length, context_length=context_length)
    summary["rows_without_trainable_tokens_examples"] = [
        index * stats.stride + 1 for index, (total, target) in enumerate(zip(stats.totals, stats.targets, strict=True))
        if target == 0 or total - target >= max_length][:10]
    return summary


# --- preparation -------------------------------------------------------------------------------------

def dataset_prepare(*, dataset: Dataset, operations: list) -> list[Dataset]:
    """Make new versions of a ready dataset (the original is only read): one, or train + validation
    for a split. Each records its parent and the operations applied, with what they did."""
    from workers.prepare import PrepareConfig, PrepareError, operations_check, run_prepare

    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; only a ready dataset can be prepared", param="file_id",
                       code="dataset_not_ready")
    try:
        operations = operations_check(operations, dataset.format)
    except PrepareError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from exc
    _counting_models(operations)  # an unknown model is a 400 before anything is queued
    if dataset.byte_size > settings.DATASET_INLINE_BYTES:
        return _prepare_queue(dataset, operations)
    fmt = dataset.training_format or dataset.format
    with tempfile.TemporaryDirectory(dir=_tmp_dir()) as work:
        work_dir = Path(work)
        local = storage_fetch(dataset.training_file_name, work_dir / "parent.jsonl")
        try:
            result = run_prepare(PrepareConfig(path=str(local), format=fmt, output_dir=str(work_dir / "out"),
                                               operations=tuple(operations),
                                               tokenizers=_tokenizer_paths(operations)))
        except PrepareError as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        stem = Path(dataset.filename).stem.split(".")[0]
        versions: list[Dataset] = []
        try:
            _versions_store(dataset, result, stem, work_dir, versions)
        except BaseException:
            for version in versions:  # all versions or none
                _files_delete(version)
            raise
    return versions


def _counting_models(operations: list[dict]) -> dict:
    """The base models that count tokens for ``filter_length``, by name; an unknown one is a 400."""
    from models_app.models import BaseModel

    models = {}
    for index, op in enumerate(operations):
        name = op.get("model") if op["op"] == "filter_length" else None
        if name and name not in models:
            models[name] = BaseModel.objects.filter(name=name).first()
            if models[name] is None:
                known = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none"
                raise InvalidRequest(f"unknown base model {name!r}; available: {known}",
                                     param=f"operations[{index}].model", code="model_not_found")
    return models


def _tokenizer_paths(operations: list[dict]) -> tuple:
    """(model name, local path) of each model that counts tokens, for ``PrepareConfig.tokenizers``."""
    from models_app.services import base_model_local_path

    return tuple((name, base_model_local_path(base)) for name, base in _counting_models(operations).items())


def _version_filename(dataset: Dataset, part: str, number: int | None = None) -> str:
    stem = Path(dataset.filename).stem.split(".")[0]
    number = number or dataset.versions.count() + 2  # the parent is version 1; a split's parts share a number
    return f"{stem}.v{number}" + (".validation.jsonl" if part == "validation" else ".jsonl")


def _part_marker(part: str, parts: int) -> list[dict]:
    return [{"op": "part", "part": part}] if parts > 1 else []


def _prepare_queue(dataset: Dataset, operations: list[dict]) -> list[Dataset]:
    """A large parent is prepared by the ``dataset_prepare`` task: the versions exist at once, ``uploaded``."""
    parts = ["train", "validation"] if operations and operations[-1]["op"] == "split" else ["train"]
    number = dataset.versions.count() + 2
    with transaction.atomic():
        versions = [Dataset.objects.create(
            owner=dataset.owner, filename=_version_filename(dataset, part, number), purpose=dataset.purpose,
            parent=dataset, operations=[*operations, *_part_marker(part, len(parts))], sha256="", byte_size=0,
        ) for part in parts]
        ids = [v.id for v in versions]
        transaction.on_commit(lambda: _dataset_prepare_task().delay(dataset.id, ids, operations))
    return versions


def dataset_prepare_run(*, parent_id: str, version_ids: list[str], operations: list[dict]) -> None:
    """Fill versions made by ``_prepare_queue`` (the ``dataset_prepare`` task): ``uploaded → validating →
    ready | invalid``, each with its file and report. The parent is only read."""
    from workers.prepare import PrepareConfig, PrepareError, run_prepare

    parent = Dataset.objects.filter(pk=parent_id).first()
    versions = list(Dataset.objects.filter(pk__in=version_ids, status__in=[Status.UPLOADED, Status.VALIDATING]))
    versions.sort(key=lambda v: version_ids.index(v.id))
    if parent is None or len(versions) != len(version_ids):
        return  # deleted meanwhile, or already done by an earlier delivery
    for version in versions:
        _dataset_transition(dataset_id=version.id, to=Status.VALIDATING, progress=0.0)
    parts = ["train", "validation"][: len(versions)]
    with tempfile.TemporaryDirectory(dir=_tmp_dir()) as work:
        work_dir = Path(work)
        local = storage_fetch(parent.training_file_name, work_dir / "parent.jsonl")
        try:
            result = run_prepare(PrepareConfig(path=str(local), format=parent.training_format or parent.format,
                                               output_dir=str(work_dir / "out"), operations=tuple(operations),
                                               tokenizers=_tokenizer_paths(operations)))
        except (PrepareError, InvalidRequest) as exc:  # InvalidRequest: the model was removed meanwhile
            for version in versions:
                _version_invalid(version, str(exc))
            return
        for part, version in zip(parts, versions, strict=True):
            if not result.rows.get(part):
                _version_invalid(version, f"the operations leave no {part} rows")
                continue
            path = Path(result.files[part])
            part_dir = work_dir / part
            part_dir.mkdir()
            checked = run_validation(_validate_config(path, version.filename, {}, part_dir))
            with open(path, "rb") as handle:
                name = default_storage.save(f"datasets/{version.id}/{version.filename}",
                                            File(handle, name=version.filename))
            with transaction.atomic():
                done = _dataset_transition(
                    dataset_id=version.id, to=Status.READY if checked.ok else Status.INVALID, file=name,
                    sha256=_sha256_of(path), byte_size=path.stat().st_size, format=checked.format,
                    container=checked.container, row_count=checked.rows, validation_report=checked.report,
                    progress=1.0, validated_at=timezone.now(),
                    operations=[*result.applied, *_part_marker(part, len(parts))])
                if done.status == Status.READY:
                    transaction.on_commit(lambda v=version.id: _dataset_quality_task().delay(v))


def _version_invalid(version: Dataset, message: str) -> None:
    report = Report(version.filename)
    report.add(Issue("prepare_failed", message, "change the operations and prepare again"))
    _dataset_transition(dataset_id=version.id, to=Status.INVALID, validation_report=report.as_dict(),
                        progress=1.0, validated_at=timezone.now())


def _dataset_prepare_task():
    from datasets_app.tasks import dataset_prepare as task

    return task


def _versions_store(dataset: Dataset, result, stem: str, work_dir: Path, versions: list) -> None:
    number = dataset.versions.count() + 2  # the parent is version 1; a split's two parts share a number
    with transaction.atomic():
        for part, path in result.files.items():
            if not result.rows.get(part):
                raise InvalidRequest(f"the operations leave no {part} rows", param="operations",
                                     code="invalid_result")
            filename = _version_filename(dataset, part, number)
            part_dir = work_dir / part
            part_dir.mkdir()
            checked = run_validation(_validate_config(Path(path), filename, {}, part_dir))
            if not checked.ok:
                raise InvalidRequest(f"the prepared {part} rows are not usable: {checked.summary}",
                                     param="operations", code="invalid_result")
            versions.append(_dataset_store(
                owner=dataset.owner, local=Path(path), filename=filename, purpose=dataset.purpose,
                sha256=_sha256_of(Path(path)), size=Path(path).stat().st_size, options={}, result=checked,
                work_dir=part_dir, parent=dataset,
                operations=[*result.applied, *_part_marker(part, len(result.files))],
            ))


# --- quality -------------------------------------------------------------------------------------

def dataset_quality_request(*, dataset: Dataset, validation: Dataset | None = None,
                            near_threshold: float | None = None) -> Dataset:
    """Queue the quality checks (optionally against a validation dataset); the result lands in ``quality``."""
    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; quality checks need a ready dataset", param="file_id",
                       code="dataset_not_ready")
    if validation is not None and validation.status != Status.READY:
        raise InvalidRequest(f"{validation.id} is {validation.status}, not ready", param="validation_file")
    if near_threshold is not None and not 0.1 <= near_threshold <= 1.0:
        raise InvalidRequest("near_threshold must be from 0.1 to 1.0", param="near_threshold")
    options = {"validation_file": validation.id if validation else None, "near_threshold": near_threshold}
    Dataset.objects.filter(pk=dataset.id).update(quality={"status": "computing", "options": options})
    transaction.on_commit(lambda: _dataset_quality_task().delay(dataset.id, options["validation_file"],
                                                                 near_threshold))
    dataset.refresh_from_db()
    return dataset


def dataset_quality(*, dataset_id: str, validation_id: str | None = None,
                    near_threshold: float | None = None) -> Dataset | None:
    """Run the quality checks (the ``dataset_quality`` task) and store the result on the dataset."""
    from workers.quality import QualityConfig, run_quality

    dataset = Dataset.objects.filter(pk=dataset_id, status=Status.READY).first()
    if dataset is None:
        return None
    validation = Dataset.objects.filter(pk=validation_id, owner=dataset.owner, status=Status.READY).first() \
        if validation_id else None
    work_dir = Path(settings.WORK_DIR) / "quality" / f"{dataset.id}-{timezone.now().timestamp():.0f}"
    options = {"validation_file": validation.id if validation else None,
               "near_threshold": near_threshold or settings.DATASET_NEAR_DUPLICATE_THRESHOLD}
    try:
        local = storage_fetch(dataset.training_file_name, work_dir / "train.jsonl")
        other = storage_fetch(validation.training_file_name, work_dir / "validation.jsonl") if validation else None
        report = run_quality(QualityConfig(path=str(local), format=dataset.training_format or dataset.format,
                                           validation_path=str(other) if other else None,
                                           near_threshold=options["near_threshold"]))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    Dataset.objects.filter(pk=dataset.id).update(quality={"status": "ready", "options": options, **report})
    dataset.refresh_from_db()
    return dataset


def _dataset_quality_task():
    from datasets_app.tasks import dataset_quality as task

    return task


def _dataset_stats_task():
    from datasets_app.tasks import dataset_stats as task

    return task


def _dataset_validate_task():
    from datasets_app.tasks import dataset_validate as task

    return task
