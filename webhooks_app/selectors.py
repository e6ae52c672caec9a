"""Reads of webhooks: who sees which endpoints (the project's members) and notifications (their user)."""

from django.db.models import QuerySet
from django.http import Http404

from accounts_app.selectors import project_acting
from webhooks_app.models import NotificationPreference, WebhookDelivery, WebhookEndpoint


def endpoints_visible_to(user) -> QuerySet[WebhookEndpoint]:
    """The endpoints of the project ``user`` acts in."""
    return WebhookEndpoint.objects.filter(project=project_acting(user))


def endpoint_get(user, endpoint_id: str) -> WebhookEndpoint:
    """An endpoint of ``user``'s project, or 404: another project's looks the same as none."""
    endpoint = endpoints_visible_to(user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise Http404(f"No such webhook endpoint: {endpoint_id}")
    return endpoint


def deliveries_of(endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint)


def notices_of(user) -> QuerySet[WebhookDelivery]:
    """``user``'s email and Slack notifications (deliveries with no endpoint)."""
    return WebhookDelivery.objects.filter(owner=user, endpoint__isnull=True)


def notification_preference_of(user) -> NotificationPreference:
    """The saved preference, or the default (nothing on, job endings chosen) unsaved."""
    found = NotificationPreference.objects.filter(user=user).first()
    return found or NotificationPreference(user=user, events=list(DEFAULT_NOTIFIED))


DEFAULT_NOTIFIED = ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled")
