"""Celery tasks for datasets: thin wrappers that take a dataset id and call a service.

They run on the light ``default`` queue (CELERY_TASK_DEFAULT_QUEUE), never behind training.
"""

from celery import shared_task

from datasets_app import services
from datasets_app.models import Dataset


@shared_task(name="datasets_app.tasks.dataset_validate")
def dataset_validate(dataset_id: str) -> None:
    if not Dataset.objects.filter(pk=dataset_id).exists():
        return
    try:
        services.dataset_validate(dataset_id=dataset_id)
    except Exception as exc:
        services.dataset_fail(dataset_id=dataset_id, message=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="datasets_app.tasks.dataset_stats")
def dataset_stats(dataset_id: str, model: str, template: str = "") -> None:
    if not Dataset.objects.filter(pk=dataset_id).exists():
        return
    services.token_stats_compute(dataset_id=dataset_id, model=model, template=template)


@shared_task(name="datasets_app.tasks.dataset_quality")
def dataset_quality(dataset_id: str, validation_id: str | None = None, near_threshold: float | None = None) -> None:
    if not Dataset.objects.filter(pk=dataset_id).exists():
        return
    try:
        services.dataset_quality(dataset_id=dataset_id, validation_id=validation_id, near_threshold=near_threshold)
    except Exception as exc:
        services.dataset_quality_fail(dataset_id=dataset_id, message=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="datasets_app.tasks.dataset_prepare")
def dataset_prepare(parent_id: str, version_ids: list[str], operations: list[dict]) -> None:
    try:
        services.dataset_prepare_run(parent_id=parent_id, version_ids=version_ids, operations=operations)
    except Exception as exc:
        for version_id in version_ids:
            services.dataset_fail(dataset_id=version_id, message=f"{type(exc).__name__}: {exc}")
        raise
