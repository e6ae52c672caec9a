"""Sending the outbox: claim a due row, send it, record the outcome; retry with exponential backoff.

At-least-once: a row is claimed (its ``attempts`` goes up and it is due again only after the send's
timeout and a margin) before it is sent, and marked succeeded only after the receiver answered 2xx.
A sender that dies in between leaves the row pending; once due, the sweep sends it again, with the
same ``webhook-id``, so a receiver that drops repeated ids sees each event exactly once.
Only ``delivery_transition`` writes ``WebhookDelivery.status``.
"""

import http.client
import json
import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.status import status_transition
from webhooks_app import tasks
from webhooks_app.addresses import AddressRefused, post_json
from webhooks_app.models import DELIVERY_TRANSITIONS, WebhookDelivery
from webhooks_app.services.events import event_summary
from webhooks_app.signing import signed_headers

log = logging.getLogger(__name__)
Status = WebhookDelivery.Status
Channel = WebhookDelivery.Channel


def delivery_transition(*, delivery_id: int, to: str, expect_attempts: int | None = None,
                        **fields) -> WebhookDelivery:
    """Move a delivery to ``to`` if ``DELIVERY_TRANSITIONS`` permits. ``expect_attempts`` fences out a
    sender whose claim was taken over (it ran past its lease): Conflict."""
    def fence(row: WebhookDelivery) -> None:
        if expect_attempts is not None and row.attempts != expect_attempts:
            raise Conflict(f"delivery {delivery_id} was claimed again (attempt {row.attempts})", code="stale_attempt")

    return status_transition(WebhookDelivery, delivery_id, to, rules=DELIVERY_TRANSITIONS, check=fence, **fields)


def delivery_backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base × 2^(attempts-1), capped."""
    return min(settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), settings.WEBHOOK_RETRY_MAX_SECONDS)


def _claim_seconds() -> float:
    # past the longest a send can take: a claimed row comes due again only once its sender must be gone
    return settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 5


def _delivery_claim(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    with transaction.atomic():
        row = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",)).select_related("endpoint")
               .filter(pk=delivery_id, status=Status.PENDING, next_attempt_at__lte=now).first())
        if row is None:
            return None  # sent, given up, not due yet, or being claimed by another sender right now
        row.attempts += 1
        row.last_attempt_at = now
        row.next_attempt_at = now + timedelta(seconds=_claim_seconds())
        row.save(update_fields=["attempts", "last_attempt_at", "next_attempt_at"])
    return row


class _Permanent(Exception):
    """A failure that another try cannot fix (the address guard refused the URL)."""


def _send(delivery: WebhookDelivery) -> int | None:
    """Send one delivery; the HTTP status (None for email). Raises on a transport failure."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    if delivery.channel == Channel.EMAIL:
        summary = event_summary(delivery.payload)
        send_mail(f"[finetune] {summary}", f"{summary}\n\n{json.dumps(delivery.payload, indent=2)}\n",
                  settings.DEFAULT_FROM_EMAIL, [delivery.target])
        return None
    if delivery.channel == Channel.SLACK:
        body = json.dumps({"text": event_summary(delivery.payload)}).encode()
        headers = {}
    else:
        body = json.dumps(delivery.payload, separators=(",", ":")).encode()
        headers = signed_headers(delivery.endpoint.secret, delivery.event_id, body)
    try:
        return post_json(delivery.target, body, headers, timeout=timeout, allow_private=allow_private)
    except AddressRefused as error:
        raise _Permanent(str(error)) from None


def delivery_send(*, delivery_id: int) -> WebhookDelivery | None:
    """Send a due pending delivery once (the ``delivery_send`` task) and record how it went: succeeded
    on a 2xx, pending again after ``delivery_backoff`` on a failure, failed after
    ``WEBHOOK_MAX_ATTEMPTS`` tries or when the address guard refuses its URL. None when it was not
    due (sent already, or another sender holds it)."""
    delivery = _delivery_claim(delivery_id)
    if delivery is None:
        return None
    code, error, permanent = None, "", False
    try:
        code = _send(delivery)
        if code is not None and not 200 <= code < 300:
            error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
    except _Permanent as failure:
        error, permanent = str(failure), True
    except (OSError, http.client.HTTPException, smtplib.SMTPException, ValueError) as failure:
        error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
    return _delivery_finish(delivery, code=code, error=error[:500], permanent=permanent)


def _delivery_finish(delivery: WebhookDelivery, *, code: int | None, error: str,
                     permanent: bool) -> WebhookDelivery | None:
    now = timezone.now()
    common = {"expect_attempts": delivery.attempts, "response_status": code, "last_error": error}
    try:
        with transaction.atomic():
            if not error:
                return delivery_transition(delivery_id=delivery.pk, to=Status.SUCCEEDED, delivered_at=now, **common)
            if permanent or delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
                log.warning("delivery %s of %s failed for good: %s", delivery.pk, delivery.event_id, error)
                return delivery_transition(delivery_id=delivery.pk, to=Status.FAILED, **common)
            delay = delivery_backoff(delivery.attempts)
            row = delivery_transition(delivery_id=delivery.pk, to=Status.PENDING,
                                      next_attempt_at=now + timedelta(seconds=delay), **common)
            transaction.on_commit(lambda: tasks.delivery_send.apply_async((delivery.pk,), countdown=delay))
            return row
    except (Conflict, WebhookDelivery.DoesNotExist):
        return None  # claimed again meanwhile (this sender ran past its lease), or its endpoint was deleted


def deliveries_sweep() -> int:
    """Queue a send of every pending delivery that is due (celery beat, every WEBHOOK_SWEEP_SECONDS):
    rows whose send was lost or whose sender died. How many were queued."""
    due = list(WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=timezone.now())
               .order_by("next_attempt_at").values_list("pk", flat=True)[:1000])
    for pk in due:
        tasks.delivery_send.delay(pk)
    return len(due)
