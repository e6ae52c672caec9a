"""Celery tasks for webhooks: thin wrappers that take a delivery id and call a service."""

from celery import shared_task

from webhooks_app import services
from webhooks_app.models import WebhookDelivery


@shared_task(name="webhooks_app.tasks.delivery_send")
def delivery_send(delivery_id: int) -> None:
    if not WebhookDelivery.objects.filter(pk=delivery_id).exists():
        return
    services.delivery_send(delivery_id=delivery_id)


@shared_task(name="webhooks_app.tasks.deliveries_sweep")
def deliveries_sweep() -> int:
    return services.deliveries_sweep()
