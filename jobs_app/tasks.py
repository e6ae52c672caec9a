"""Celery tasks for jobs: thin wrappers that take a job id and call a service."""

from celery import shared_task

from finetune_site.errors import Conflict
from jobs_app import services
from jobs_app.models import FineTuneJob


@shared_task(name="jobs_app.tasks.job_validate")
def job_validate(job_id: str) -> None:
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    try:
        services.job_validate(job_id=job_id)
    except Conflict:
        pass  # cancelled meanwhile: its state is already final
    except Exception as exc:
        services.job_fail(job_id=job_id, code="validation_error", message=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="jobs_app.tasks.job_run")
def job_run(job_id: str) -> None:
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    services.job_run(job_id=job_id)
