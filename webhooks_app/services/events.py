"""An event's outbox rows: one per subscribed endpoint and per notification channel the owner
turned on, written in the transaction of the change they report and sent after it commits."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from webhooks_app import tasks
from webhooks_app.models import (
    EVENT_TYPES,
    TEST_EVENT,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
    new_event_id,
)

Channel = WebhookDelivery.Channel


def event_payload(*, event_id: str, type: str, data: dict) -> dict:
    """The body every destination gets (OpenAI's event shape)."""
    return {"id": event_id, "object": "event", "created_at": int(timezone.now().timestamp()), "type": type,
            "data": data}


def event_summary(payload: dict) -> str:
    """One line for people (email subject, Slack message)."""
    data, type = payload.get("data") or {}, payload.get("type", "")
    subject = data.get("id", "")
    if type == TEST_EVENT:
        return f"Test event from finetune for webhook {data.get('endpoint', '')}"
    if type == "model.promoted":
        return f"Model {data.get('name')} v{data.get('version')} is now {data.get('alias')}"
    if type.startswith("fine_tuning.job."):
        line = f"Fine-tuning job {subject} {data.get('status', type.rsplit('.', 1)[-1])}"
        error = (data.get("error") or {}).get("message")
        return f"{line}: {error}" if error else line
    if type.startswith("dataset."):
        return f"Dataset {data.get('filename') or subject} is {data.get('status')}"
    if type == "evaluation.finished":
        return f"Evaluation {subject} {data.get('status')}"
    return f"{type} {subject}"


def event_record(*, owner_id: int, project_id: str, type: str, data: dict) -> list[WebhookDelivery]:
    """Write the outbox rows of one event of an object of project ``project_id`` made by ``owner_id`` and
    queue their sends after commit: one per endpoint of the project, and the maker's own notifications.

    Called inside the transaction of the change (the receivers are connected to signals sent in it):
    if that transaction rolls back, no row exists and nothing is sent. A row that is written but
    whose send is lost (a dead worker, a flushed broker) is sent by the sweep.
    """
    assert type in EVENT_TYPES, type
    event_id = new_event_id()
    payload = event_payload(event_id=event_id, type=type, data=data)
    rows = [WebhookDelivery(owner_id=endpoint.owner_id, endpoint=endpoint, channel=Channel.WEBHOOK,
                            target=endpoint.url, event_id=event_id, event_type=type, payload=payload)
            for endpoint in WebhookEndpoint.objects.filter(project_id=project_id) if type in endpoint.events]
    preference = NotificationPreference.objects.filter(user_id=owner_id).first()
    if preference and type in preference.events:
        email = get_user_model().objects.filter(pk=owner_id).values_list("email", flat=True).first()
        if preference.email and email:
            rows.append(WebhookDelivery(owner_id=owner_id, channel=Channel.EMAIL, target=email, event_id=event_id,
                                        event_type=type, payload=payload))
        if preference.slack_url:
            rows.append(WebhookDelivery(owner_id=owner_id, channel=Channel.SLACK, target=preference.slack_url,
                                        event_id=event_id, event_type=type, payload=payload))
    return deliveries_queue(rows)


def deliveries_queue(rows: list[WebhookDelivery]) -> list[WebhookDelivery]:
    """Store ``rows`` and send each once the transaction commits."""
    if not rows:
        return []
    with transaction.atomic():
        created = WebhookDelivery.objects.bulk_create(rows)
        ids = [row.pk for row in created]
        transaction.on_commit(lambda: [tasks.delivery_send.delay(pk) for pk in ids])
    return created
