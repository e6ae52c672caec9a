"""Quality checks of a ready dataset: duplicates, near-duplicates, PII, train/validation overlap,
empty turns, very long rows. Only this module writes ``Dataset.quality_status``, through
``QUALITY_TRANSITIONS``; the report lands in ``Dataset.quality``."""

import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from datasets_app import tasks
from datasets_app.models import QUALITY_TRANSITIONS, Dataset
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from finetune_site.status import status_transition

Status = Dataset.Status
Quality = Dataset.QualityStatus


def _quality_transition(dataset_id: str, to: str, **fields) -> Dataset:
    return status_transition(Dataset, dataset_id, to, rules=QUALITY_TRANSITIONS, field="quality_status", **fields)


def dataset_quality_request(*, dataset: Dataset, validation: Dataset | None = None,
                            near_threshold: float | None = None) -> Dataset:
    """Queue the quality checks (optionally against a validation dataset); the result lands in ``quality``."""
    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; quality checks need a ready dataset", param="file_id",
                       code="dataset_not_ready")
    if dataset.is_vision:  # its duplicates (perceptual hashes) are in the validation report
        raise InvalidRequest(f"{dataset.id} is a vision dataset: its duplicates and balance are in its report "
                             f"(GET /v1/datasets/{dataset.id}/report)", param="file_id", code="vision_dataset")
    if validation is not None and validation.status != Status.READY:
        raise InvalidRequest(f"{validation.id} is {validation.status}, not ready", param="validation_file")
    if near_threshold is not None and not 0.1 <= near_threshold <= 1.0:
        raise InvalidRequest("near_threshold must be from 0.1 to 1.0", param="near_threshold")
    options = {"validation_file": validation.id if validation else None, "near_threshold": near_threshold}
    with transaction.atomic():
        dataset = _quality_transition(dataset.id, Quality.COMPUTING, quality={"options": options})
        transaction.on_commit(lambda: tasks.dataset_quality.delay(dataset.id, options["validation_file"],
                                                                  near_threshold))
    return dataset


def dataset_quality(*, dataset_id: str, validation_id: str | None = None,
                    near_threshold: float | None = None) -> Dataset | None:
    """Run the quality checks (the ``dataset_quality`` task) and store the result on the dataset."""
    from workers.quality import QualityConfig, run_quality

    dataset = Dataset.objects.filter(pk=dataset_id, status=Status.READY, quality_status=Quality.COMPUTING).first()
    if dataset is None:
        return None  # deleted, or already done by an earlier delivery of the task
    validation = Dataset.objects.filter(pk=validation_id, project_id=dataset.project_id, status=Status.READY).first() \
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
    return _quality_transition(dataset.id, Quality.READY, quality={"options": options, **report})


def dataset_quality_fail(*, dataset_id: str, message: str) -> None:
    """A check that crashed: ``failed`` with its error, for the page and the API to show."""
    try:
        _quality_transition(dataset_id, Quality.FAILED, quality={"error": message[:2000]})
    except (Conflict, Dataset.DoesNotExist):
        pass
