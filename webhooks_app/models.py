"""Webhook endpoints, notification preferences and the outbox of deliveries.

Endpoints belong to a user for now; when projects exist they move to a project (the selectors
``endpoints_visible_to`` / ``deliveries_visible_to`` are the one place that decides who sees what).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from finetune_site.ids import new_id

# OpenAI's names for a job's end, and ours for the rest.
EVENT_TYPES = {
    "fine_tuning.job.succeeded": "A fine-tuning job succeeded",
    "fine_tuning.job.failed": "A fine-tuning job failed",
    "fine_tuning.job.cancelled": "A fine-tuning job was cancelled",
    "dataset.ready": "A dataset passed its checks",
    "dataset.invalid": "A dataset failed its checks",
    "model.promoted": "An alias of a model name now points at another version",
    "evaluation.finished": "An evaluation ended (succeeded or failed)",
}
TEST_EVENT = "webhook.test"


def new_endpoint_id() -> str:
    return new_id("whep")


def new_event_id() -> str:
    return new_id("evt")


class WebhookEndpoint(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_endpoint_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list, help_text="Event types it receives (EVENT_TYPES).")
    # Standard Webhooks: "whsec_" + base64 of 24 random bytes. Kept in clear: every delivery is signed with it.
    secret = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.id} → {self.url}"


class NotificationPreference(models.Model):
    """How a user hears about their own events besides webhooks: email and a Slack incoming webhook."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    email = models.BooleanField(default=False, help_text="Email the account's address.")
    slack_url = models.URLField(max_length=2000, blank=True,
                                help_text="A Slack-compatible incoming-webhook URL; empty: none.")
    events = models.JSONField(default=list, help_text="Event types notified (EVENT_TYPES).")


class WebhookDelivery(models.Model):
    """One event for one destination: the outbox row, written in the transaction of the change it
    reports, delivered (and retried) by the ``delivery_send`` task; the sweep sends what is due."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"
        SLACK = "slack"

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, null=True, blank=True,
                                 related_name="deliveries", help_text="Webhooks only.")
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.WEBHOOK)
    target = models.CharField(max_length=2000, help_text="Where it goes: the URL or the email address.")
    # The webhook-id header: the same on every retry, so a receiver drops repeats by it.
    event_id = models.CharField(max_length=40, default=new_event_id)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The body, as sent: {id, object, created_at, type, data}.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Claims so far (fencing token of the sender).")
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True,
                                           help_text="Pending: when it is due (a claim pushes it past the "
                                                     "send's timeout, so a dead sender's row comes due again).")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            # One row per destination and event: an event recorded twice cannot be sent twice.
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="delivery_endpoint_event_unique",
                                    condition=models.Q(endpoint__isnull=False)),
            models.UniqueConstraint(fields=["owner", "channel", "event_id"], name="delivery_notice_event_unique",
                                    condition=models.Q(endpoint__isnull=True)),
            models.CheckConstraint(condition=models.Q(status__in=["pending", "succeeded", "failed"]),
                                   name="delivery_status_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} → {self.target}"


# The one table of legal status changes; only webhooks_app.services.delivery_transition reads it.
# pending → pending: an attempt failed and another is due later.
DELIVERY_TRANSITIONS: dict[str, set[str]] = {
    WebhookDelivery.Status.PENDING: {WebhookDelivery.Status.PENDING, WebhookDelivery.Status.SUCCEEDED,
                                     WebhookDelivery.Status.FAILED},
    WebhookDelivery.Status.SUCCEEDED: set(),
    WebhookDelivery.Status.FAILED: set(),
}
