"""Celery tasks for sweeps: thin wrappers that take a job id and call a service."""

from celery import shared_task

from sweeps_app import services


@shared_task(name="sweeps_app.tasks.sweep_trial_finish")
def sweep_trial_finish(job_id: str) -> None:
    services.sweep_trial_finish(job_id=job_id)


@shared_task(name="sweeps_app.tasks.sweeps_catch_up")
def sweeps_catch_up() -> int:
    return services.sweeps_catch_up()
