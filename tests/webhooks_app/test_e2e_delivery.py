"""End to end, with a real Celery worker: every job ending reaches every subscribed endpoint, once per
endpoint by webhook-id, even when the worker is killed in the middle of a delivery."""

import json
import threading

import pytest

from jobs_app.models import FineTuneJob
from jobs_app.services import job_cancel, job_fail, job_transition
from tests.e2e import wait_for
from tests.factories import make_dataset, make_job, make_user
from tests.webhooks_app.receiver import Receiver
from webhooks_app.models import WebhookDelivery
from webhooks_app.services import deliveries_sweep, webhook_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
JOB_ENDS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
# The worker's settings: receivers on 127.0.0.1, and a short send timeout so a claim held by a dead
# worker comes due again in seconds (2 × 5 s + 5 s).
WORKER_ENV = {"WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "1", "WEBHOOK_TIMEOUT_SECONDS": "5",
              "WEBHOOK_RETRY_BASE_SECONDS": "1"}


def test_every_job_ending_arrives_once_per_endpoint_after_a_worker_kill_mid_delivery(
        live_base_model, worker_pool, private_allowed):
    first_arrived, worker_killed = threading.Event(), threading.Event()

    def hang_on_the_first(index, request):
        if index == 0:  # the worker is killed while it waits for this answer
            first_arrived.set()
            worker_killed.wait(60)
        return 200

    hanging, plain = Receiver(answer=hang_on_the_first), Receiver()
    try:
        user = make_user()
        dataset = make_dataset(user)
        cancelled = make_job(user, dataset=dataset, status="queued")
        failed, succeeded = (make_job(user, dataset=dataset, status="running") for _ in range(2))
        endpoints = {receiver: webhook_create(owner=user, url=receiver.url, events=JOB_ENDS)
                     for receiver in (hanging, plain)}
        worker_pool.ensure(WORKER_ENV)

        job_cancel(job=cancelled)
        job_fail(job_id=failed.id, code="training_failed", message="out of memory")
        job_transition(job_id=succeeded.id, to=FineTuneJob.Status.SUCCEEDED)

        assert first_arrived.wait(120), "the worker never sent the first delivery"
        worker_pool.kill()
        worker_killed.set()
        held = WebhookDelivery.objects.get(endpoint=endpoints[hanging], event_id=hanging.ids()[0])
        assert held.status == "pending" and held.attempts == 1  # the dead worker never recorded an answer

        worker_pool.ensure(WORKER_ENV)

        def all_delivered() -> bool:
            deliveries_sweep()  # celery beat's part: send again what is due, the dead worker's claim included
            return not WebhookDelivery.objects.exclude(status="succeeded").exists()

        wait_for(all_delivered, timeout=120, interval=1, what="every delivery to succeed")

        for receiver, endpoint in endpoints.items():
            rows = WebhookDelivery.objects.filter(endpoint=endpoint)
            expected = {row.event_id: (row.event_type, row.payload["data"]["id"]) for row in rows}
            assert sorted(expected.values()) == sorted([("fine_tuning.job.cancelled", cancelled.id),
                                                        ("fine_tuning.job.failed", failed.id),
                                                        ("fine_tuning.job.succeeded", succeeded.id)])
            assert set(receiver.ids()) == set(expected)  # no event missing, none foreign
            assert all(request.verifies(endpoint.secret) for request in receiver.received)
            for request in receiver.received:  # the body says what the id says
                body = json.loads(request.body)
                assert (body["type"], body["data"]["id"]) == expected[request.webhook_id]
                assert body["id"] == request.webhook_id
        # A receiver that drops ids it has seen handles each event once: the send the dead worker
        # held came again with the same webhook-id; everything else came exactly once.
        assert sorted(hanging.ids()) == sorted([*set(hanging.ids()), held.event_id])
        assert len(plain.ids()) == len(set(plain.ids())) == 3
        assert WebhookDelivery.objects.get(pk=held.pk).attempts == 2
    finally:
        hanging.stop()
        plain.stop()
