"""Celery tasks for pipelines: thin wrappers that take a run id and call a service."""

from celery import shared_task


@shared_task(name="pipelines_app.tasks.pipeline_advance")
def pipeline_advance(run_id: str) -> None:
    from pipelines_app import services

    services.pipeline_advance(run_id=run_id)
