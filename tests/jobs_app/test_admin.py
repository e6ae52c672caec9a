"""The admin is the operator's tool: every model is listed, the job page shows its history."""

import pytest

from jobs_app.models import FineTuneJob
from jobs_app.services import job_event_add
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("path", ["datasets_app/dataset", "jobs_app/finetunejob", "jobs_app/jobevent",
                                  "jobs_app/checkpoint", "base_models/basemodel", "models_app/finetunedmodel",
                                  "models_app/evaluation", "models_app/modelalias", "models_app/aliaschange",
                                  "models_app/export"])
def test_every_model_has_a_searchable_list(staff_client, base_model, path):
    make_job()
    response = staff_client.get(f"/admin/{path}/?q=x")
    assert response.status_code == 200


def test_job_page_shows_event_history_read_only(staff_client, base_model):
    job = make_job()
    job_event_add(job_id=job.id, message="Step 1/3: train loss=2.5", type="metrics", data={"step": 1})
    page = staff_client.get(f"/admin/jobs_app/finetunejob/{job.id}/change/").content.decode()
    assert "Step 1/3: train loss=2.5" in page
    assert 'name="status"' not in page  # status is read-only: only job_transition writes it


def test_cancel_action_cancels_unfinished_and_reports_finished(staff_client, base_model):
    running = make_job(status=FineTuneJob.Status.RUNNING)
    done = make_job(status=FineTuneJob.Status.SUCCEEDED)
    response = staff_client.post("/admin/jobs_app/finetunejob/", {
        "action": "cancel_jobs", "_selected_action": [running.id, done.id]}, follow=True)
    assert FineTuneJob.objects.get(pk=running.id).status == FineTuneJob.Status.CANCELLED
    assert FineTuneJob.objects.get(pk=done.id).status == FineTuneJob.Status.SUCCEEDED
    assert "Cancelled 1 job(s)." in response.content.decode()
