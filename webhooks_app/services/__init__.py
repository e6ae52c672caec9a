"""Writes for webhooks and notifications, one module per topic.

- ``endpoints``: creating and deleting endpoints (the address guard at the door), the notification
  preference, and the 'send test' event
- ``events``: an event's outbox rows, written in the transaction of the change it reports
- ``delivery``: claiming, sending, retrying with backoff (the only writer of ``WebhookDelivery.status``)
  and the sweep that sends whatever is due
"""

from webhooks_app.services.delivery import (
    deliveries_sweep,
    delivery_backoff,
    delivery_send,
    delivery_transition,
)
from webhooks_app.services.endpoints import (
    notification_preference_update,
    webhook_create,
    webhook_delete,
    webhook_test_send,
)
from webhooks_app.services.events import event_payload, event_record, event_summary

__all__ = [
    "deliveries_sweep", "delivery_backoff", "delivery_send", "delivery_transition", "event_payload",
    "event_record", "event_summary", "notification_preference_update", "webhook_create", "webhook_delete",
    "webhook_test_send",
]
