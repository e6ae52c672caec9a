"""How pipelines hear that a step's object ended (connected in ``PipelinesAppConfig.ready``): the runs
waiting on it advance, in a task queued after the commit that ended it."""

from django.db import transaction

from pipelines_app import tasks
from pipelines_app.services import pipeline_runs_waiting_on


def _advance_after_commit(object_id: str) -> None:
    for run_id in pipeline_runs_waiting_on(object_id):
        transaction.on_commit(lambda run_id=run_id: tasks.pipeline_advance.delay(run_id))


def job_step_ended(sender, *, job, previous, **kwargs) -> None:
    if job.is_finished:
        _advance_after_commit(job.id)


def dataset_step_ended(sender, *, dataset_id: str, **kwargs) -> None:
    _advance_after_commit(dataset_id)


def evaluation_step_ended(sender, *, evaluation, **kwargs) -> None:
    _advance_after_commit(evaluation.id)


def export_step_ended(sender, *, export, **kwargs) -> None:
    _advance_after_commit(export.id)
