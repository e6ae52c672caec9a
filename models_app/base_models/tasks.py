"""Celery tasks for base models: thin wrappers that take a base model's id and call a service.

They run on the light ``default`` queue: reading a config and a tokenizer takes seconds (a hub
download longer, but never a training slot).
"""

from celery import shared_task

from models_app.base_models import services


@shared_task(name="models_app.base_models.tasks.base_model_describe")
def base_model_describe(base_model_id: int) -> None:
    services.base_model_describe(base_model_id=base_model_id)
