"""How webhooks hear from the apps below (connected in ``WebhooksAppConfig.ready``). Every signal
here is sent inside the transaction of its change, so the outbox rows commit with it."""

from jobs_app.models import FineTuneJob
from webhooks_app.services import event_record

JOB_EVENTS = {FineTuneJob.Status.SUCCEEDED: "fine_tuning.job.succeeded",
              FineTuneJob.Status.FAILED: "fine_tuning.job.failed",
              FineTuneJob.Status.CANCELLED: "fine_tuning.job.cancelled"}


def job_event_record(sender, *, job, previous: str, **kwargs) -> None:
    """A job reached the end (succeeded, failed or cancelled)."""
    type = JOB_EVENTS.get(job.status)
    if type is None or previous == job.status:
        return
    succeeded = job.status == FineTuneJob.Status.SUCCEEDED
    event_record(owner_id=job.owner_id, project_id=job.project_id, type=type, data={
        "id": job.id, "object": "fine_tuning.job", "status": job.status,
        "fine_tuned_model": job.fine_tuned_model_name if succeeded else None, "error": job.error,
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None})


def dataset_event_record(sender, *, dataset, **kwargs) -> None:
    """A dataset has its verdict: ``dataset.ready`` or ``dataset.invalid``."""
    event_record(owner_id=dataset.owner_id, project_id=dataset.project_id, type=f"dataset.{dataset.status}", data={
        "id": dataset.id, "object": "file", "filename": dataset.filename, "status": dataset.status,
        "rows": dataset.row_count})


def model_promoted_record(sender, *, alias, previous, action: str, **kwargs) -> None:
    """An alias points at another version: ``model.promoted``."""
    model = alias.model
    event_record(owner_id=alias.owner_id, project_id=alias.project_id, type="model.promoted", data={
        "id": model.id, "object": "model", "name": alias.name, "version": model.version, "alias": alias.alias,
        "previous": previous.id if previous else None, "action": action})


def evaluation_event_record(sender, *, evaluation, **kwargs) -> None:
    """An evaluation ended: ``evaluation.finished``, its status saying how."""
    event_record(owner_id=evaluation.owner_id, project_id=evaluation.project_id, type="evaluation.finished", data={
        "id": evaluation.id, "object": "evaluation", "status": evaluation.status, "model": evaluation.model_id,
        "metrics": evaluation.metrics or {}, "error": evaluation.error or None})
