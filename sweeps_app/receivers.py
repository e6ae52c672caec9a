"""What sweeps hear from the jobs app (connected in ``SweepsAppConfig.ready``)."""

from django.db import transaction

from jobs_app.models import FINISHED
from sweeps_app import tasks
from sweeps_app.models import SweepTrial


def trial_job_transitioned(sender, *, job, previous: str, **kwargs) -> None:
    """A trial's job ended: advance its sweep once the change is committed (sent inside the transition's
    transaction, so a rolled-back transition advances nothing)."""
    if job.status in FINISHED and SweepTrial.objects.filter(job_id=job.id).exists():
        transaction.on_commit(lambda: tasks.sweep_trial_finish.delay(job.id))
