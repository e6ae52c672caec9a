"""Celery tasks for base models: thin wrappers that take a base model's id and call a service.

They run on the light ``default`` queue: reading a config and a tokenizer takes seconds (a hub
download longer, but never a training slot).
"""

from celery import shared_task

from models_app.base_models import services
from models_app.base_models.models import BaseModel


@shared_task(name="models_app.base_models.tasks.base_model_describe")
def base_model_describe(base_model_id: int) -> None:
    base = BaseModel.objects.filter(pk=base_model_id).first()
    if base is None or base.status != BaseModel.Status.PENDING:
        return
    try:
        services.base_model_describe(base_model_id=base_model_id)
    except Exception as exc:
        services.base_model_fail(base_model=base, message=f"{type(exc).__name__}: {exc}")
        raise
