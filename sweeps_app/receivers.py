"""What sweeps hear from the jobs app and the registry (connected in ``SweepsAppConfig.ready``)."""

from django.db import transaction

from jobs_app.models import FINISHED
from models_app.models import Evaluation
from sweeps_app import services, tasks
from sweeps_app.models import SweepTrial


def trial_job_transitioned(sender, *, job, previous: str, **kwargs) -> None:
    """A trial's job ended: advance its sweep once the change is committed (sent inside the transition's
    transaction, so a rolled-back transition advances nothing)."""
    if job.status in FINISHED and SweepTrial.objects.filter(job_id=job.id).exists():
        transaction.on_commit(lambda: tasks.sweep_trial_finish.delay(job.id))


def trial_job_validated(sender, *, job_id: str, step: int, total_steps: int, **kwargs) -> None:
    """A running job stored a validation pass: if it is a trial, its sweep may prune it. Answered here,
    in the worker that trains it, so the decision does not wait for a free worker."""
    services.sweep_trial_report(job_id=job_id, step=step, total_steps=total_steps)


def trial_evaluated(sender, *, evaluation: Evaluation, **kwargs) -> None:
    """The evaluation after a trial's job ended: a sweep whose objective is an evaluation metric scores
    the trial now (sent inside the evaluation's transaction)."""
    if evaluation.kind != Evaluation.Kind.AUTO or evaluation.model is None:
        return
    job_id = evaluation.model.job_id
    if SweepTrial.objects.filter(job_id=job_id, state=SweepTrial.State.RUNNING).exists():
        transaction.on_commit(lambda: tasks.sweep_trial_finish.delay(job_id))
