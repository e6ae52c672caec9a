"""Reads of jobs shared by views, the API and the CLI."""

from django.db.models import QuerySet
from django.http import Http404

from jobs_app.models import FineTuneJob


def jobs_visible_to(user) -> QuerySet[FineTuneJob]:
    return FineTuneJob.objects.filter(owner=user).select_related(
        "dataset", "validation_dataset", "base_model"
    )


def job_get(user, job_id: str) -> FineTuneJob:
    """The user's job, or 404 (another user's job does not exist for them)."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404(f"No such fine-tuning job: {job_id}")
    return job
