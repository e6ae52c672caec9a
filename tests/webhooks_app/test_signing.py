"""Standard Webhooks signatures: the scheme's published example verifies; a wrong secret, another body
or an old timestamp does not; a real delivery verifies with its endpoint's secret only."""

import pytest

from jobs_app.services import job_cancel
from tests.factories import make_job, make_user
from webhooks_app.models import WebhookDelivery
from webhooks_app.services import delivery_send, webhook_create
from webhooks_app.signing import secret_new, signature, signature_verify, signed_headers

# The example of the Standard Webhooks specification (and Svix's libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TS, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_specifications_example():
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE
    headers = {"webhook-id": SPEC_ID, "webhook-timestamp": str(SPEC_TS), "webhook-signature": SPEC_SIGNATURE}
    assert signature_verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TS + 10)


def test_wrong_secret_other_body_or_old_timestamp_fail_verification():
    secret = secret_new()
    body = b'{"type": "fine_tuning.job.succeeded"}'
    headers = signed_headers(secret, "evt-1", body)
    assert signature_verify(secret, headers, body)
    assert not signature_verify(secret_new(), headers, body)
    assert not signature_verify(secret, headers, body + b" ")
    assert not signature_verify(secret, {**headers, "webhook-id": "evt-2"}, body)
    old = signed_headers(secret, "evt-1", body, timestamp=1_000_000_000)
    assert not signature_verify(secret, old, body)
    assert not signature_verify(secret, {}, body)


@pytest.mark.django_db
def test_a_delivered_event_verifies_with_its_endpoints_secret_only(private_allowed, receiver, base_model):
    user = make_user()
    endpoint = webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
    job_cancel(job=make_job(user, status="queued"))
    delivery = WebhookDelivery.objects.get()
    delivery_send(delivery_id=delivery.pk)

    [request] = receiver.received
    assert request.webhook_id == delivery.event_id
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.verifies(endpoint.secret)
    assert not request.verifies(secret_new())
