"""The admin is the operator's tool: every model is listed, the job page shows its history."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs_app.models import FineTuneJob, Worker
from jobs_app.services import job_event_add
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("path", ["datasets_app/dataset", "jobs_app/finetunejob", "jobs_app/jobevent",
                                  "jobs_app/checkpoint", "jobs_app/worker", "base_models/basemodel",
                                  "models_app/finetunedmodel", "models_app/evaluation", "models_app/modelalias",
                                  "models_app/aliaschange", "models_app/export"])
def test_every_model_has_a_searchable_list(staff_client, base_model, path):
    make_job()
    response = staff_client.get(f"/admin/{path}/?q=x")
    assert response.status_code == 200


def test_job_page_shows_event_history_read_only(staff_client, base_model):
    job = make_job()
    job_event_add(job_id=job.id, message="Validation started", data={"step": 1})
    page = staff_client.get(f"/admin/jobs_app/finetunejob/{job.id}/change/").content.decode()
    assert "Validation started" in page
    assert 'name="status"' not in page  # status is read-only: only job_transition writes it


def test_cancel_action_cancels_unfinished_and_reports_finished(staff_client, base_model):
    running = make_job(status=FineTuneJob.Status.RUNNING)
    done = make_job(status=FineTuneJob.Status.SUCCEEDED)
    response = staff_client.post("/admin/jobs_app/finetunejob/", {
        "action": "cancel_jobs", "_selected_action": [running.id, done.id]}, follow=True)
    assert FineTuneJob.objects.get(pk=running.id).status == FineTuneJob.Status.CANCELLED
    assert FineTuneJob.objects.get(pk=done.id).status == FineTuneJob.Status.SUCCEEDED
    assert "Cancelled 1 job(s)." in response.content.decode()


def test_no_admin_page_edits_a_status_or_an_alias():
    """Statuses move through their services (rule tables, broadcasts); the admin only shows them."""
    from django.contrib import admin

    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("datasets_app", "jobs_app", "models_app", "base_models", "accounts_app"):
            continue  # Celery's task results are not ours
        for field in ("status", "quality_status", "archived_at"):
            if any(f.name == field for f in model._meta.get_fields()):
                assert field in model_admin.readonly_fields, f"{model.__name__}.{field} is editable"
    from models_app.models import ModelAlias

    assert "model" in admin.site._registry[ModelAlias].readonly_fields


def test_labels_read_as_plurals_and_a_job_page_summarises_its_events(staff_client, base_model):
    from tests.factories import make_job, make_metric

    index = staff_client.get("/admin/").content.decode()
    assert "Token statistics" in index and "Model aliases" in index and "statss" not in index and "aliass" not in index
    job = make_job()
    for step in range(1, 301):
        make_metric(job, step, total_steps=300)
    page = staff_client.get(f"/admin/jobs_app/finetunejob/{job.id}/change/").content.decode()
    assert "300 metric points" in page and f"job__id__exact={job.id}" in page
    assert page.count("Step ") < 30  # not every metric event inline


def test_worker_list_shows_a_worker_unseen_lately_as_not_alive(staff_client):
    Worker.objects.create(name="live@a", devices={"kind": "cuda", "count": 2})
    Worker.objects.create(name="dead@b", devices={"kind": "cpu", "cpus": 4})
    Worker.objects.filter(name="dead@b").update(last_seen=timezone.now() - timedelta(minutes=10))
    page = staff_client.get("/admin/jobs_app/worker/").content.decode()
    rows = {name: page.split(name, 1)[1].split("</tr>", 1)[0] for name in ("live@a", "dead@b")}
    assert 'alt="True"' in rows["live@a"] and 'alt="False"' in rows["dead@b"]
