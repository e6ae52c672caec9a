"""The outbox: each event writes one row per subscribed endpoint in the transaction of the change it
reports; a rolled-back change writes nothing; an event cannot be recorded twice for one endpoint."""

import pytest
from django.db import IntegrityError, transaction

from accounts_app.selectors import project_acting
from jobs_app.models import FineTuneJob
from jobs_app.services import job_cancel, job_fail, job_transition
from models_app.models import FineTunedModel
from models_app.services import model_promote
from tests.factories import make_dataset, make_job, make_user
from webhooks_app.models import EVENT_TYPES, WebhookDelivery, WebhookEndpoint
from webhooks_app.signing import secret_new

pytestmark = pytest.mark.django_db


def _endpoint(owner, events=None, url="http://127.0.0.1:9/hook") -> WebhookEndpoint:
    # written directly: these tests are about events, not about checking URLs (test_api.py is)
    return WebhookEndpoint.objects.create(owner=owner, project=project_acting(owner), url=url,
                                          events=list(events or EVENT_TYPES), secret=secret_new())


def test_each_job_ending_writes_one_row_per_subscribed_endpoint(base_model):
    user = make_user()
    cancelled, failed = make_job(user, status="queued"), make_job(user, status="running")
    succeeded = make_job(user, status="running")
    everything, only_failures = _endpoint(user), _endpoint(user, ["fine_tuning.job.failed"])
    _endpoint(make_user())  # another user's endpoint hears nothing of this user's jobs
    job_cancel(job=cancelled)
    job_fail(job_id=failed.id, code="oops", message="it broke")
    job_transition(job_id=succeeded.id, to=FineTuneJob.Status.SUCCEEDED)

    rows = {(row.endpoint_id, row.event_type, row.payload["data"]["id"]) for row in WebhookDelivery.objects.all()}
    assert rows == {(everything.id, "fine_tuning.job.cancelled", cancelled.id),
                    (everything.id, "fine_tuning.job.failed", failed.id),
                    (everything.id, "fine_tuning.job.succeeded", succeeded.id),
                    (only_failures.id, "fine_tuning.job.failed", failed.id)}
    failure = WebhookDelivery.objects.get(endpoint=only_failures)
    assert failure.payload["data"]["error"]["message"] == "it broke" and failure.status == "pending"
    # one event, one id, whichever endpoint it goes to
    failures = WebhookDelivery.objects.filter(event_type="fine_tuning.job.failed")
    assert failures.count() == 2 and failures.values("event_id").distinct().count() == 1


def test_transitions_that_do_not_end_a_job_write_nothing(base_model):
    user = make_user()
    job = make_job(user, status="queued")
    _endpoint(user)
    job_transition(job_id=job.id, to=FineTuneJob.Status.RUNNING)
    assert not WebhookDelivery.objects.exists()


def test_a_rolled_back_transition_writes_no_outbox_row(base_model):
    user = make_user()
    job = make_job(user, status="queued")
    _endpoint(user)
    with pytest.raises(RuntimeError), transaction.atomic():
        job_cancel(job=job)
        assert WebhookDelivery.objects.count() == 1  # written with the change...
        raise RuntimeError("the transaction of the change fails after the transition")
    assert not WebhookDelivery.objects.exists()  # ...and gone with it
    assert FineTuneJob.objects.get(pk=job.pk).status == "queued"


def test_one_event_cannot_be_recorded_twice_for_an_endpoint(base_model):
    user = make_user()
    job = make_job(user, status="queued")
    _endpoint(user)
    job_cancel(job=job)
    row = WebhookDelivery.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookDelivery.objects.create(owner=user, endpoint=row.endpoint, target=row.target, event_id=row.event_id,
                                       event_type=row.event_type, payload=row.payload)


def test_dataset_verdict_is_an_event(base_model):
    user = make_user()
    _endpoint(user)
    dataset = make_dataset(user)  # small: checked in the upload request
    row = WebhookDelivery.objects.get(event_type="dataset.ready")
    assert row.payload["data"]["id"] == dataset.id and row.payload["data"]["filename"] == "train.jsonl"


def test_promotion_is_an_event(base_model):
    user = make_user()
    _endpoint(user, ["model.promoted"])
    job = make_job(user, status="succeeded")
    model = FineTunedModel.objects.create(id=f"ft:tiny-llama:x:{job.id[-6:]}", owner=user, job=job,
                                          project_id=job.project_id,
                                          base_model=base_model, name="tiny-topics", version=1, adapter="lora",
                                          adapter_path="models/x/adapter")
    model_promote(model=model, alias="production")
    row = WebhookDelivery.objects.get(event_type="model.promoted")
    assert row.payload["data"] == {"id": model.id, "object": "model", "name": "tiny-topics", "version": 1,
                                   "alias": "production", "previous": None, "action": "promote"}
    model_promote(model=model, alias="production")  # already there: no change, no event
    assert WebhookDelivery.objects.filter(event_type="model.promoted").count() == 1


def test_an_evaluations_end_is_an_event(base_model, tiny_model_path):
    from models_app.services import evaluation_create, evaluation_run

    user = make_user()
    dataset = make_dataset(user)
    _endpoint(user, ["evaluation.finished"])
    evaluation = evaluation_create(owner=user, model=base_model, dataset=dataset, max_rows=2, max_new_tokens=2)
    assert not WebhookDelivery.objects.exists()  # created is not finished
    evaluation_run(evaluation_id=evaluation.id)
    row = WebhookDelivery.objects.get(event_type="evaluation.finished")
    assert row.payload["data"]["id"] == evaluation.id and row.payload["data"]["status"] == "succeeded"
