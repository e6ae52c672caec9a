"""Quotas and the claim's order against the database (no worker: the claim is called as a worker calls it)."""

from datetime import timedelta
from html import escape

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts_app.selectors import project_personal
from finetune_site.errors import InvalidRequest
from jobs_app.models import FineTuneJob, Quota
from jobs_app.services import job_claim, job_claim_next, job_create
from jobs_app.services.leases import job_timeout_enforce
from jobs_app.services.quotas import accounts_usage
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_usage, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


def _queued(owner, **hyperparameters) -> FineTuneJob:
    return make_job(owner, status=Status.QUEUED, hyperparameters={"n_epochs": 1, **hyperparameters})


def test_claim_takes_the_account_with_less_recent_usage_before_an_older_job(base_model):
    busy, idle = make_user(), make_user()
    make_usage(busy, minutes=10)
    older = _queued(busy)
    younger = _queued(idle)
    claimed = job_claim_next(job_id=older.id, worker="w1")
    assert claimed.id == younger.id and claimed.status == Status.RUNNING
    older.refresh_from_db()
    assert older.status == Status.QUEUED and older.wait_reason == ""  # passed over for fairness: no wait


def test_claim_takes_the_oldest_job_between_equal_accounts(base_model):
    first, second = make_user(), make_user()
    older = _queued(first)
    younger = _queued(second)
    assert job_claim_next(job_id=younger.id, worker="w1").id == older.id


def test_claim_takes_a_higher_priority_account_first(base_model):
    plain, urgent = make_user(), make_user()
    Quota.objects.create(project=project_personal(urgent), priority=5)
    make_usage(urgent, minutes=60)  # more usage does not matter against priority
    older = _queued(plain)
    younger = _queued(urgent)
    assert job_claim_next(job_id=older.id, worker="w1").id == younger.id


def test_job_over_max_concurrent_waits_with_the_reason_shown_in_api_and_page(base_model, client):
    owner = make_user()
    Quota.objects.create(project=project_personal(owner), max_concurrent_jobs=1)
    running = _queued(owner)
    assert job_claim_next(job_id=running.id, worker="w1").id == running.id
    waiting = _queued(owner)
    assert job_claim_next(job_id=waiting.id, worker="w2") is None
    waiting.refresh_from_db()
    reason = "waiting for a slot: 1 of the account's 1 concurrent jobs are running (quota)"
    assert waiting.status == Status.QUEUED and waiting.wait_reason == reason
    assert api_client(owner).get(f"/v1/fine_tuning/jobs/{waiting.id}").json()["wait_reason"] == reason
    client.force_login(owner)
    assert "Waiting: " + escape(reason) in client.get(reverse("jobs:detail", args=[waiting.id])).content.decode()
    assert waiting.events.filter(level="warn", message__startswith="Waiting for a slot").count() == 1


def test_other_account_runs_while_one_is_at_its_concurrent_limit(base_model):
    limited, other = make_user(), make_user()
    Quota.objects.create(project=project_personal(limited), max_concurrent_jobs=1)
    job_claim_next(job_id=_queued(limited).id, worker="w1")
    held = _queued(limited)
    free = _queued(other)
    assert job_claim_next(job_id=held.id, worker="w2").id == free.id


def test_claim_of_a_named_job_as_a_gangs_first_node_does_honours_its_quota(base_model):
    owner = make_user()
    Quota.objects.create(project=project_personal(owner), max_concurrent_jobs=1)
    first = _queued(owner)
    assert job_claim(job_id=first.id, worker="w1").id == first.id
    held = _queued(owner)
    assert job_claim(job_id=held.id, worker="w2") is None
    held.refresh_from_db()
    assert held.status == Status.QUEUED and held.wait_reason.startswith("waiting for a slot: 1 of")


def test_job_over_this_months_token_budget_waits(base_model):
    owner = make_user()
    make_usage(owner, minutes=1)  # 500 tokens this month
    job = _queued(owner)
    FineTuneJob.objects.filter(pk=job.pk).update(estimate={"tokens": 400, "seconds": None})
    Quota.objects.create(project=project_personal(owner), tokens_per_month=800)
    assert job_claim_next(job_id=job.id, worker="w1") is None
    job.refresh_from_db()
    assert job.wait_reason == ("waiting for next month's token budget: 500 of 800 used this month and this job "
                               "needs about 400 (quota)")


def test_usage_counts_devices_times_hours_this_month(base_model):
    owner = make_user()
    make_usage(owner, minutes=30, devices=2)
    project_id = project_personal(owner).id
    usage = accounts_usage([project_id])[project_id]
    assert usage.gpu_hours == pytest.approx(1.0, rel=0.01) and usage.tokens == 500
    assert usage.recent_seconds == pytest.approx(3600, rel=0.01) and usage.running == 0


def test_job_whose_estimate_exceeds_the_monthly_token_budget_is_refused_at_creation(base_model):
    owner = make_user()
    Quota.objects.create(project=project_personal(owner), tokens_per_month=10)
    dataset = make_dataset(owner)
    with pytest.raises(InvalidRequest) as refused:
        job_create(owner=owner, training_file=dataset.id, model="tiny-llama", hyperparameters={"n_epochs": 1})
    assert refused.value.param == "training_file" and "more than the account's monthly budget of 10" in str(
        refused.value)
    body = {"model": "tiny-llama", "training_file": dataset.id}
    response = api_client(owner).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "training_file"
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert not FineTuneJob.objects.filter(owner=owner).exists()


def test_job_within_the_budget_is_created(base_model):
    owner = make_user()
    Quota.objects.create(project=project_personal(owner), tokens_per_month=10**9)
    assert make_job(owner).status == Status.VALIDATING_FILES


@pytest.mark.parametrize("field", ["max_concurrent_jobs", "gpu_hours_per_month", "tokens_per_month"])
@pytest.mark.parametrize("value", [0, -1])
def test_zero_or_negative_quota_is_refused(field, value):
    quota = Quota(project=project_personal(make_user()), **{field: value})
    with pytest.raises(ValidationError) as refused:
        quota.full_clean()
    assert field in refused.value.message_dict
    if value == 0:  # the database refuses it too (negative counts are refused by their unsigned type)
        with pytest.raises(IntegrityError), transaction.atomic():
            quota.save()


def test_admin_refuses_a_zero_quota(client):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    owner = make_user()
    response = client.post("/admin/jobs_app/quota/add/", {"project": project_personal(owner).pk,
                                                           "max_concurrent_jobs": 0, "priority": 0})
    assert response.status_code == 200 and "must be above 0" in response.content.decode()
    assert not Quota.objects.exists()
    assert client.get("/admin/jobs_app/quota/?q=x").status_code == 200


def test_timeout_below_zero_is_a_400_naming_the_option(base_model):
    owner = make_user()
    body = {"model": "tiny-llama", "training_file": make_dataset(owner).id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"timeout": -5}}}}
    response = api_client(owner).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "method.supervised.hyperparameters.timeout"


def test_timeout_fails_a_running_job_past_its_deadline(base_model):
    job = _queued(make_user(), timeout=60)
    claimed = job_claim_next(job_id=job.id, worker="w1")
    assert job_timeout_enforce(job=claimed) is False
    FineTuneJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=61))
    claimed.refresh_from_db()
    assert job_timeout_enforce(job=claimed) is True
    claimed.refresh_from_db()
    assert claimed.status == Status.FAILED and claimed.error["code"] == "timeout"
    assert "timeout of 60 seconds" in claimed.error["message"]


def test_timeout_of_one_second_is_said_in_the_singular(base_model):
    job = _queued(make_user(), timeout=1)
    claimed = job_claim_next(job_id=job.id, worker="w1")
    FineTuneJob.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=2))
    claimed.refresh_from_db()
    assert job_timeout_enforce(job=claimed) is True
    claimed.refresh_from_db()
    assert "timeout of 1 second (started" in claimed.error["message"]


def test_staff_sets_and_reads_an_accounts_quota_through_the_api():
    owner = make_user()
    staff = api_client(make_user(is_staff=True))
    url = f"/v1/quotas/{project_personal(owner).id}"
    response = staff.post(url, {"max_concurrent_jobs": 2, "tokens_per_month": 1_000_000, "priority": 3},
                          format="json")
    assert response.status_code == 200
    assert response.json() == {"object": "quota", "organization_id": project_personal(owner).id,
                               "max_concurrent_jobs": 2, "gpu_hours_per_month": None,
                               "tokens_per_month": 1_000_000, "priority": 3}
    cleared = staff.post(url, {"max_concurrent_jobs": None}, format="json").json()
    assert cleared["max_concurrent_jobs"] is None and cleared["priority"] == 3  # the rest stays
    assert staff.get(url).json() == cleared


@pytest.mark.parametrize(("body", "param"), [
    ({"max_concurrent_jobs": 0}, "max_concurrent_jobs"),
    ({"gpu_hours_per_month": -1.5}, "gpu_hours_per_month"),
    ({"tokens_per_month": -10}, "tokens_per_month"),
    ({"priority": "high"}, "priority"),
])
def test_api_refuses_a_zero_negative_or_malformed_quota_naming_the_field(body, param):
    owner = make_user()
    url = f"/v1/quotas/{project_personal(owner).id}"
    response = api_client(make_user(is_staff=True)).post(url, body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert not Quota.objects.filter(project__personal_user=owner).exists()


def test_quota_api_is_for_staff_only_and_names_unknown_accounts():
    owner = make_user()
    url = f"/v1/quotas/{project_personal(owner).id}"
    assert api_client(owner).post(url, {"priority": 9}, format="json").status_code == 403
    assert not Quota.objects.exists()
    missing = api_client(make_user(is_staff=True)).get("/v1/quotas/proj_missing")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "organization_id"


def test_an_accounts_id_from_before_projects_names_the_users_personal_project():
    owner = make_user()
    staff = api_client(make_user(is_staff=True))
    response = staff.post(f"/v1/quotas/user-{owner.pk}", {"max_concurrent_jobs": 1}, format="json")
    assert response.status_code == 200 and response.json()["organization_id"] == project_personal(owner).id
    assert staff.get(f"/v1/quotas/{project_personal(owner).id}").json()["max_concurrent_jobs"] == 1
    assert staff.get("/v1/quotas/user-999999").status_code == 404
