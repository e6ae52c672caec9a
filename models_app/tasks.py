"""Celery tasks for models: thin wrappers that take an id and call a service."""

from celery import shared_task

from models_app import services
from models_app.models import Evaluation, Export


@shared_task(name="models_app.tasks.export_run")
def export_run(export_id: str) -> None:
    if not Export.objects.filter(pk=export_id).exists():
        return
    services.export_run(export_id=export_id)


@shared_task(name="models_app.tasks.evaluation_run")
def evaluation_run(evaluation_id: str) -> None:
    if not Evaluation.objects.filter(pk=evaluation_id).exists():
        return
    services.evaluation_run(evaluation_id=evaluation_id)


@shared_task(name="models_app.tasks.model_card_readme_store")
def model_card_readme_store(model_id: str) -> None:
    services.model_card_readme_store(model_id=model_id)


# Replies are only useful while someone waits for them: a task lost with its worker is not
# redone (acks early), and no result row is written per request.
@shared_task(name="models_app.tasks.chat_completion_run", acks_late=False, ignore_result=True)
def chat_completion_run(model_id: str, config: dict, reply_channel: str, tag: str = "") -> None:
    services.chat_completion_run(model_id=model_id, config=config, reply_channel=reply_channel, tag=tag)


@shared_task(name="models_app.tasks.image_classify_run", acks_late=False, ignore_result=True)
def image_classify_run(model_id: str, image: str, top: int, reply_channel: str) -> None:
    services.image_classify_run(model_id=model_id, image=image, top=top, reply_channel=reply_channel)


@shared_task(name="models_app.tasks.stored_completions_purge", ignore_result=True)
def stored_completions_purge() -> None:
    """Hourly (beat): delete stored completions past their owner's retention."""
    services.stored_completions_purge()
