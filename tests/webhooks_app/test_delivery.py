"""Sending the outbox: retries with exponential backoff and the same webhook-id until the receiver
says 2xx; gives up after WEBHOOK_MAX_ATTEMPTS; the address guard again at every send; email and
Slack notifications per the user's preference."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from jobs_app.services import job_cancel
from tests.factories import make_job, make_user
from tests.webhooks_app.receiver import Receiver
from webhooks_app.models import WebhookDelivery
from webhooks_app.services import (
    deliveries_sweep,
    delivery_send,
    notification_preference_update,
    webhook_create,
    webhook_test_send,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def fast_retries(private_allowed):
    private_allowed.WEBHOOK_RETRY_BASE_SECONDS = 2
    private_allowed.WEBHOOK_RETRY_MAX_SECONDS = 3
    private_allowed.WEBHOOK_MAX_ATTEMPTS = 4
    return private_allowed


def _come_due(delivery: WebhookDelivery) -> None:
    """What waiting for the backoff would do, without the wait."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def _cancel_one_job(user) -> WebhookDelivery:
    job_cancel(job=make_job(user, status="queued"))
    return WebhookDelivery.objects.get(event_type="fine_tuning.job.cancelled")


def test_failed_sends_are_retried_with_backoff_and_the_same_webhook_id(fast_retries, base_model):
    receiver = Receiver(answer=lambda index, request: 503 if index < 2 else 200)  # fails twice, then takes it
    try:
        user = make_user()
        endpoint = webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
        delivery = _cancel_one_job(user)

        waits = []
        for attempt in (1, 2):
            row = delivery_send(delivery_id=delivery.pk)
            assert row.status == "pending" and row.attempts == attempt and row.response_status == 503
            assert row.last_error == "HTTP 503"
            waits.append(round((row.next_attempt_at - row.last_attempt_at).total_seconds()))
            assert delivery_send(delivery_id=delivery.pk) is None  # not due yet: nothing sent
            _come_due(row)
        assert waits == [2, 3]  # 2 s × 2^0, then 2 s × 2^1 capped at 3 s

        done = delivery_send(delivery_id=delivery.pk)
        assert done.status == "succeeded" and done.attempts == 3 and done.delivered_at and done.last_error == ""
        assert receiver.ids() == [delivery.event_id] * 3
        assert all(request.verifies(endpoint.secret) for request in receiver.received)
        _come_due(done)
        assert delivery_send(delivery_id=delivery.pk) is None  # delivered: never sent again
        assert len(receiver.received) == 3
    finally:
        receiver.stop()


def test_delivery_fails_after_the_last_attempt(fast_retries, base_model):
    receiver = Receiver(answer=lambda index, request: 500)
    try:
        user = make_user()
        webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
        delivery = _cancel_one_job(user)
        for _ in range(4):
            row = delivery_send(delivery_id=delivery.pk)
            _come_due(row)
        assert row.status == "failed" and row.attempts == 4 and row.last_error == "HTTP 500"
        assert delivery_send(delivery_id=delivery.pk) is None and len(receiver.received) == 4
    finally:
        receiver.stop()


def test_redirects_are_not_followed(private_allowed, base_model):
    receiver = Receiver(answer=lambda index, request: 302)  # points at 169.254.169.254
    try:
        user = make_user()
        webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
        row = delivery_send(delivery_id=_cancel_one_job(user).pk)
        assert row.status == "pending" and "HTTP 302 (redirects are not followed)" == row.last_error
        assert len(receiver.received) == 1
    finally:
        receiver.stop()


def test_the_address_guard_runs_again_at_delivery(settings, private_allowed, receiver, base_model):
    user = make_user()
    webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
    delivery = _cancel_one_job(user)
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False  # the operator turned it off since
    row = delivery_send(delivery_id=delivery.pk)
    assert row.status == "failed" and "WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1" in row.last_error
    assert receiver.received == []


def test_an_unreachable_receiver_is_retried(fast_retries, receiver, base_model):
    user = make_user()
    webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
    delivery = _cancel_one_job(user)
    receiver.stop()
    row = delivery_send(delivery_id=delivery.pk)
    assert row.status == "pending" and row.attempts == 1 and "ConnectionRefusedError" in row.last_error


def test_sweep_queues_only_due_pending_deliveries(private_allowed, receiver, base_model):
    user = make_user()
    webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
    due = _cancel_one_job(user)
    later = WebhookDelivery.objects.create(owner=user, endpoint=due.endpoint, target=due.target, event_id="evt-later",
                                           event_type=due.event_type, payload=due.payload,
                                           next_attempt_at=timezone.now() + timedelta(hours=1))
    assert later.status == "pending"
    assert deliveries_sweep() == 1


def test_send_test_reaches_the_endpoint(private_allowed, receiver):
    user = make_user()
    endpoint = webhook_create(owner=user, url=receiver.url, events=["dataset.ready"])
    delivery = webhook_test_send(endpoint=endpoint)
    assert delivery_send(delivery_id=delivery.pk).status == "succeeded"
    [request] = receiver.received
    assert request.verifies(endpoint.secret) and b'"type":"webhook.test"' in request.body


def test_email_and_slack_notifications_follow_the_users_preference(private_allowed, receiver, base_model):
    user = make_user(email="ada@example.com")
    notification_preference_update(user=user, email=True, slack_url=receiver.url,
                                   events=["fine_tuning.job.cancelled"])
    job = make_job(user, status="queued")
    job_cancel(job=job)
    for row in WebhookDelivery.objects.all():
        assert delivery_send(delivery_id=row.pk).status == "succeeded"
    assert {row.channel for row in WebhookDelivery.objects.all()} == {"email", "slack"}

    [message] = mail.outbox
    assert message.to == ["ada@example.com"] and f"Fine-tuning job {job.id} cancelled" in message.subject
    [posted] = receiver.received
    assert posted.body.decode() == f'{{"text": "Fine-tuning job {job.id} cancelled"}}'

    notification_preference_update(user=user, email=False, slack_url="", events=["fine_tuning.job.cancelled"])
    job_cancel(job=make_job(user, status="queued"))
    assert WebhookDelivery.objects.count() == 2  # nothing on: nothing written


@pytest.mark.parametrize(("fields", "param"), [
    ({"email": False, "slack_url": "http://10.0.0.5/hook", "events": ["dataset.ready"]}, "slack_url"),
    ({"email": False, "slack_url": "", "events": ["dataset.gone"]}, "events"),
    ({"email": True, "slack_url": "", "events": ["dataset.ready"]}, "email"),  # the account has no address
])
def test_bad_notification_preference_is_refused_with_param(settings, fields, param):
    from finetune_site.errors import InvalidRequest

    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    with pytest.raises(InvalidRequest) as refused:
        notification_preference_update(user=make_user(), **fields)
    assert refused.value.param == param
