"""Checking a stored dataset: ``uploaded → validating → ready | invalid``. The only writer of
``Dataset.status`` is ``dataset_transition``, through the ``DATASET_TRANSITIONS`` table."""

import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from datasets_app import tasks
from datasets_app.broadcast import dataset_publish
from datasets_app.models import DATASET_TRANSITIONS, Dataset
from datasets_app.services.hub import hub_source, hub_source_fetch
from datasets_app.services.images import dataset_images_check
from datasets_app.services.options import dataset_options_clean, text_intent_result, validate_config
from datasets_app.services.quality import dataset_quality_request
from datasets_app.services.stats import token_stats_ensure
from datasets_app.signals import dataset_checked, dataset_verdict
from finetune_site.errors import Conflict
from finetune_site.files import storage_delete_all, storage_fetch, storage_is_s3
from finetune_site.status import status_transition
from workers.events import ValidationProgress
from workers.hub import HubError
from workers.report import Issue, Report
from workers.validate import ValidationResult, run_validation

Status = Dataset.Status
PROGRESS_STEP = 0.01


def dataset_transition(*, dataset_id: str, to: str, **fields) -> Dataset:
    """Move a dataset to ``to`` if ``DATASET_TRANSITIONS`` permits: lock, save, publish after commit."""
    with transaction.atomic():
        dataset = status_transition(Dataset, dataset_id, to, rules=DATASET_TRANSITIONS, **fields)
        dataset_publish(dataset_id, {"status": to, "progress": dataset.progress})
    return dataset


def dataset_actions(dataset: Dataset) -> dict[str, bool]:
    """What a dataset allows now (what its page offers)."""
    ready = dataset.status == Status.READY
    # vision datasets are checked, split and reported; training on them comes with the vision strategies
    return {"fine_tune": ready and not dataset.is_vision, "prepare": ready,
            "count_tokens": ready and bool(dataset.training_format),
            "revalidate": Status.UPLOADED in DATASET_TRANSITIONS[dataset.status]}


def validation_fields(result: ValidationResult) -> dict:
    """What a validation result sets on its dataset (the verdict included)."""
    return {"status": Status.READY if result.ok else Status.INVALID, "format": result.format,
            "container": result.container, "row_count": result.rows, "validation_report": result.report,
            "progress": 1.0, "validated_at": timezone.now()}


def dataset_verdict_after(dataset: Dataset) -> None:
    """Once the verdict is committed: waiting jobs hear of it; a ready dataset gets its quality
    checks and the token counts its page shows (computed on the write path, never by a GET).

    Called inside the transaction that stores the verdict: ``dataset_verdict`` receivers write in it."""
    dataset_verdict.send(sender=Dataset, dataset=dataset)
    if dataset.status == Status.READY and not dataset.is_vision:  # the text checks: no rows of text in images
        dataset_quality_request(dataset=dataset)
        token_stats_ensure(dataset=dataset)
    transaction.on_commit(lambda: dataset_checked.send(sender=Dataset, dataset_id=dataset.id))


def dataset_validate(*, dataset_id: str) -> Dataset | None:
    """Check a stored dataset (the ``dataset_validate`` task): ``uploaded → validating → ready | invalid``.

    The original file is only read. The normalised rows, when needed, are stored next to it before
    the dataset becomes ready, so a ready dataset always has everything the trainer reads.
    """
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().filter(pk=dataset_id).first()
        if dataset is None or dataset.status not in (Status.UPLOADED, Status.VALIDATING):
            return None  # deleted, or already checked by an earlier delivery of the task
        dataset = dataset_transition(dataset_id=dataset_id, to=Status.VALIDATING, progress=0.0)
    # its own folder: a second delivery of the task may check the same dataset at the same moment
    (Path(settings.WORK_DIR) / "datasets").mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(dir=Path(settings.WORK_DIR) / "datasets", prefix=f"{dataset.id}-"))
    try:
        if hub_source(dataset) and not dataset.file:
            try:
                local = hub_source_fetch(dataset=dataset, work_dir=work_dir)
            except HubError as exc:
                dataset_fail(dataset_id=dataset.id, message=str(exc), code="hub_fetch_failed",
                             hint="check the dataset id and split on the hub, or upload the file; validate it "
                                  "again (POST /v1/datasets/{id}/validate) once the workers have a network")
                return Dataset.objects.filter(pk=dataset.id).first()
        else:
            local = _local_path(dataset, work_dir)
        if dataset.is_vision:
            return _images_validate(dataset, local, work_dir)
        result = text_intent_result(run_validation(validate_config(local, dataset.filename, dataset.options, work_dir),
                                                   _ProgressWriter(dataset.id)), dataset.filename, dataset.options)
        training_name = ""
        if result.ok and result.normalised:
            name = f"datasets/{dataset.id}/normalised/train.jsonl"
            with open(work_dir / "train.jsonl", "rb") as handle:
                training_name = default_storage.save(name, File(handle, name="train.jsonl"))
        return _validation_finish(dataset, result, training_name)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _images_validate(dataset: Dataset, local: Path, work_dir: Path) -> Dataset | None:
    _, fields = dataset_images_check(dataset=dataset, local=local, work_dir=work_dir, emit=_ProgressWriter(dataset.id))
    stored = [t["name"] for t in fields["stats"]["thumbnails"]] + [fields.get("training_file", "")]
    with transaction.atomic():
        current = Dataset.objects.select_for_update().filter(pk=dataset.id).first()
        if current is None or current.status != Status.VALIDATING:  # deleted or reset meanwhile
            transaction.on_commit(lambda: storage_delete_all([name for name in stored if name]))
            return None
        earlier = [t["name"] for t in (current.stats or {}).get("thumbnails", []) if t.get("name")]
        finished = dataset_transition(dataset_id=dataset.id, to=fields.pop("status"), **fields)
        dataset_verdict_after(finished)
        if earlier:  # checked again (revalidated): the earlier check's thumbnails go
            transaction.on_commit(lambda: storage_delete_all(earlier))
    return finished


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
        fields = validation_fields(result)
        finished = dataset_transition(dataset_id=dataset.id, to=fields.pop("status"), training_file=training_name,
                                      **fields)
        dataset_verdict_after(finished)
    return finished


def dataset_fail(*, dataset_id: str, message: str, code: str = "", hint: str = "") -> None:
    """Mark a dataset whose check crashed ``invalid``, with a report that says so (the file is kept).
    ``code`` and ``hint``: a failure the check knows (a hub dataset that cannot be fetched); by
    default an unexpected one."""
    report = Report(Dataset.objects.filter(pk=dataset_id).values_list("filename", flat=True).first() or "")
    if code:
        report.add(Issue(code, message[:1000], hint))
    else:
        report.add(Issue("internal_error", f"the check stopped unexpectedly ({message[:500]})",
                         "validate it again (POST /v1/datasets/{id}/validate); if it fails again, report it"))
    try:
        with transaction.atomic():
            failed = dataset_transition(dataset_id=dataset_id, to=Status.INVALID,
                                        validation_report=report.as_dict(), validated_at=timezone.now())
            dataset_verdict_after(failed)
    except (Conflict, Dataset.DoesNotExist):
        return


def dataset_revalidate(*, dataset: Dataset, options: dict) -> Dataset:
    """Check an invalid dataset again with other options (container, format, column_map)."""
    options = dataset_options_clean(**options)
    if dataset.status != Status.INVALID:
        raise Conflict(f"{dataset.id} is {dataset.status}; only an invalid dataset is checked again (prepare a "
                       "new version of a ready one)", param="file_id", code="invalid_transition")
    with transaction.atomic():
        dataset = dataset_transition(dataset_id=dataset.id, to=Status.UPLOADED, options=options, progress=0.0,
                                      validation_report={}, format="", row_count=0)
        transaction.on_commit(lambda: tasks.dataset_validate.delay(dataset.id))
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
