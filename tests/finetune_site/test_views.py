"""The dashboard and its partials."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from finetune_site import selectors
from jobs_app.models import FineTuneJob
from tests.e2e import wait_for
from tests.factories import make_dataset, make_job, make_metric, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


def test_dashboard_shows_own_active_jobs_with_progress_and_usage(client, base_model):
    user = make_user()
    running = make_job(user, status=Status.RUNNING)
    FineTuneJob.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(seconds=30))
    make_metric(running, 4, 10)
    done = make_job(user, status=Status.SUCCEEDED)
    FineTuneJob.objects.filter(pk=done.pk).update(
        trained_tokens=1234, started_at=timezone.now() - timedelta(hours=2), finished_at=timezone.now())
    other = make_job(status=Status.RUNNING)
    client.force_login(user)
    page = client.get("/").content.decode()
    assert running.id in page and other.id not in page
    assert 'value="4"' in page and "step <span class=\"step\">4</span> / <span class=\"total\">10</span>" in page
    assert "1,234" in page and "2.0" in page  # tokens trained (with a thousands separator), hours
    assert running.dataset.filename in page


def test_dashboard_job_list_is_live_over_the_socket_and_polls_only_without_it(client, base_model):
    user = make_user()
    make_job(user, status=Status.RUNNING)
    client.force_login(user)
    page = client.get("/").content.decode()
    assert 'ws-connect="/ws/dashboard/"' in page and 'id="ws-state"' in page
    # the fallback while the socket is down (app.js cancels the poll while it is open)
    assert 'hx-trigger="every 3s" data-poll-offline-only' in page


def test_usage_splits_gpu_and_cpu_hours(base_model):
    from finetune_site.selectors import usage_for

    user = make_user()
    now = timezone.now()
    for device, hours in (("cuda", 3), ("cpu", 1)):
        job = make_job(user, status=Status.SUCCEEDED)
        FineTuneJob.objects.filter(pk=job.pk).update(metrics={"device": device}, finished_at=now,
                                                     started_at=now - timedelta(hours=hours))
    usage = usage_for(user)
    assert (round(usage["gpu_hours"], 3), round(usage["cpu_hours"], 3), round(usage["hours"], 3)) == (3, 1, 4)


def test_active_jobs_partial_is_a_fragment(client, base_model):
    user = make_user()
    job = make_job(user, status=Status.QUEUED)
    client.force_login(user)
    response = client.get(reverse("active_jobs"))
    assert job.id in response.content.decode() and b"<html" not in response.content


def test_worker_status_never_breaks_without_a_broker(client, monkeypatch):
    from finetune_site.celery import app

    def unreachable(*args, **kwargs):
        raise ConnectionError("no broker")

    cache.delete(selectors.WORKERS_CACHE_KEY)
    monkeypatch.setattr(app.control, "broadcast", unreachable)
    client.force_login(make_user())
    response = client.get(reverse("worker_status"))
    assert response.status_code == 200 and b"broker unreachable" in response.content
    cache.delete(selectors.WORKERS_CACHE_KEY)


def test_worker_status_names_only_own_jobs(client, base_model, monkeypatch):
    user = make_user()
    mine, theirs = make_job(user, status=Status.RUNNING), make_job(status=Status.RUNNING)
    monkeypatch.setattr(selectors, "workers_status", lambda: {"ok": True, "error": "", "workers": [
        {"name": "w1@host", "busy": True, "tasks": 1, "jobs": [mine.id]},
        {"name": "w2@host", "busy": True, "tasks": 1, "jobs": [theirs.id]},
    ]})
    client.force_login(user)
    page = client.get(reverse("worker_status")).content.decode()
    assert "w1@host" in page and "w2@host" in page and mine.id in page and theirs.id not in page


def test_worker_status_answer_is_cached(monkeypatch):
    cache.delete(selectors.WORKERS_CACHE_KEY)
    calls = []
    monkeypatch.setattr(selectors, "_workers_inspect", lambda: calls.append(1) or {"ok": True, "workers": []})
    selectors.workers_status()
    selectors.workers_status()
    assert calls == [1]
    cache.delete(selectors.WORKERS_CACHE_KEY)


def test_dashboard_lists_recent_datasets(client):
    user = make_user()
    dataset = make_dataset(user)
    client.force_login(user)
    assert dataset.filename in client.get("/").content.decode()


@pytest.mark.e2e
def test_worker_status_names_a_real_workers_device(client, worker):
    cache.delete(selectors.WORKERS_CACHE_KEY)
    status = wait_for(lambda: _answered(selectors._workers_inspect()), timeout=30, what="the worker's device")
    assert status["ok"] and any(w["device"].startswith("CPU (") and not w["busy"] for w in status["workers"])
    client.force_login(make_user())
    body = client.get(reverse("worker_status")).content.decode()
    assert "CPU (" in body and "idle" in body
    cache.delete(selectors.WORKERS_CACHE_KEY)


def _answered(status: dict) -> dict | None:
    # The device is named just after the worker starts; until then it says "detecting…".
    return status if any(w["device"] != "detecting…" for w in status["workers"]) else None


# --- the first-run tour ---


def test_a_new_users_dashboard_offers_the_three_steps_with_one_click_to_the_sample(client, base_model):
    client.force_login(make_user())
    page = client.get("/").content.decode()
    tour = re.search(r'<section id="first-run".*?</section>', page, re.S).group(0)
    assert 'action="/start/sample-dataset/"' in tour and 'id="tour-sample"' in tour
    assert tour.index("A dataset.") < tour.index("A fine-tuning job.") < tour.index("The playground.")


def test_the_sample_dataset_opens_the_wizard_with_it_chosen_and_options_that_learn(client, base_model):
    from datasets_app.models import Dataset

    user = make_user()
    client.force_login(user)
    response = client.post("/start/sample-dataset/")
    train, validation = (Dataset.objects.get(owner=user, filename=name) for name in (
        "sample-topics-train.jsonl", "sample-topics-validation.jsonl"))
    assert (train.status, train.row_count, validation.row_count, train.format) == ("ready", 48, 16, "chat")
    assert response["Location"] == f"/jobs/new/?dataset={train.id}&validation={validation.id}"
    step1 = client.get(response["Location"]).content.decode()
    assert re.search(rf'<option value="{train.id}" selected>', step1)
    assert len(re.findall(rf'<option value="{validation.id}" selected>', step1)) == 1  # the validation set
    client.post("/jobs/new/", {"training_file": train.id, "validation_file": validation.id})
    step2 = client.get("/jobs/new/model/").content.decode()
    assert 'name="n_epochs" value="8"' in step2 and 'name="learning_rate" value="0.003"' in step2
    page = client.get("/").content.decode()  # step 1 done, step 2 offered with both files
    assert '<li class="done" id="tour-step-dataset">' in page and "sample-topics-train.jsonl</a> (48 rows)" in page
    assert f'id="tour-job" href="/jobs/new/?dataset={train.id}&amp;validation={validation.id}"' in page


def test_the_tour_follows_the_job_and_leaves_once_there_is_a_model(client, base_model):
    from models_app.models import FineTunedModel

    user = make_user()
    client.force_login(user)
    job = make_job(user, status=Status.RUNNING)
    page = client.get("/").content.decode()
    assert f'<a href="/jobs/{job.id}/">{job.id}</a>' in re.search(r'id="tour-step-job".*?</li>', page, re.S).group(0)
    FineTunedModel.objects.create(id="ft:tiny-llama::x1", owner=user, job=job,
                                  project_id=job.project_id, base_model=job.base_model,
                                  name="tiny-llama-ft", adapter="lora", version=1, adapter_path="x", artifact_files=[])
    assert 'id="first-run"' not in client.get("/").content.decode()
