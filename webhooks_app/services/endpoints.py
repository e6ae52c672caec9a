"""Endpoints, the notification preference and the 'send test' event."""

from django.conf import settings
from django.db import transaction

from accounts_app.selectors import project_acting
from finetune_site.errors import InvalidRequest
from webhooks_app.addresses import AddressRefused, url_check, url_parts, url_reach_check
from webhooks_app.models import (
    EVENT_TYPES,
    TEST_EVENT,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
    new_event_id,
)
from webhooks_app.services.events import deliveries_queue, event_payload
from webhooks_app.signing import secret_new

MAX_URL = 2000
MAX_ENDPOINTS = 20


def _url_clean(url, *, param: str, reach: bool) -> str:
    """A URL the address guard allows (and, with ``reach``, that accepts a connection): 400 otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(f"{param} is required: an http:// or https:// URL", param=param)
    url = url.strip()
    if len(url) > MAX_URL:
        raise InvalidRequest(f"{param} is longer than {MAX_URL} characters", param=param)
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES
    try:
        _, host, port = url_parts(url)
        if reach:  # an address nobody listens on is refused now, not found out at every event
            url_reach_check(url, allow_private=allow_private, timeout=min(settings.WEBHOOK_TIMEOUT_SECONDS, 5))
        else:
            url_check(url, allow_private=allow_private)
    except AddressRefused as error:
        raise InvalidRequest(f"{param}: {error}", param=param, code="invalid_url") from None
    except OSError as error:
        raise InvalidRequest(f"{param}: {host}:{port} is unreachable ({error or type(error).__name__})",
                             param=param, code="url_unreachable") from None
    return url


def _events_clean(events, *, param: str = "events") -> list[str]:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidRequest(f"{param} must be a non-empty list of event types: {', '.join(EVENT_TYPES)}",
                             param=param)
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise InvalidRequest(f"{param}: unknown event type {unknown[0]!r}; use {', '.join(EVENT_TYPES)}",
                             param=param, code="unknown_event")
    return [e for e in EVENT_TYPES if e in events]


def webhook_create(*, owner, url: str, events: list[str]) -> WebhookEndpoint:
    """An endpoint of ``owner``'s project for ``events`` at ``url``, with a new ``whsec_`` secret. The URL must
    resolve to public addresses (unless the operator allows private ones) and accept a connection."""
    events = _events_clean(events)
    url = _url_clean(url, param="url", reach=True)
    project = project_acting(owner)
    if WebhookEndpoint.objects.filter(project=project).count() >= MAX_ENDPOINTS:
        raise InvalidRequest(f"at most {MAX_ENDPOINTS} webhook endpoints; delete one first", param="url",
                             code="too_many_endpoints")
    return WebhookEndpoint.objects.create(owner=owner, project=project, url=url, events=events, secret=secret_new())


def webhook_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint and its delivery log; what it had pending is not sent."""
    endpoint.delete()


def webhook_test_send(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send a ``webhook.test`` event to this endpoint only (signed and retried as any other)."""
    with transaction.atomic():
        payload = event_payload(event_id=new_event_id(), type=TEST_EVENT,
                                data={"endpoint": endpoint.id, "url": endpoint.url})
        row = WebhookDelivery(owner_id=endpoint.owner_id, endpoint=endpoint, channel=WebhookDelivery.Channel.WEBHOOK,
                              target=endpoint.url, event_id=payload["id"], event_type=TEST_EVENT, payload=payload)
        return deliveries_queue([row])[0]


def notification_preference_update(*, user, email: bool, slack_url: str, events: list[str]) -> NotificationPreference:
    """Save how ``user`` is notified of their events: email on/off, a Slack-compatible URL (or none)."""
    events = _events_clean(events) if events else []
    slack_url = _url_clean(slack_url, param="slack_url", reach=False) if slack_url and slack_url.strip() else ""
    if email and not user.email:
        raise InvalidRequest("your account has no email address; ask an admin to set one", param="email",
                             code="no_email")
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"email": bool(email), "slack_url": slack_url, "events": events})
    return preference

