"""One id per request: returned in X-Request-ID, on every log line (JSON with LOG_FORMAT=json), in the
headers of the tasks it queues, restored in the worker, and on the job events written on its behalf."""

import json
import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings

from jobs_app import tasks
from jobs_app.models import FineTuneJob, JobEvent
from tests.api import api_client
from tests.e2e import ROOT
from tests.factories import make_dataset, make_user


def queued_messages(queue: str, task: str) -> list[dict]:
    """The messages waiting in the broker (Redis) for ``queue`` that call ``task``, as sent."""
    server = redis.Redis.from_url(settings.REDIS_URL)
    messages = [json.loads(raw) for raw in server.lrange(queue, 0, -1)]
    return [message for message in messages if message["headers"].get("task") == task]


def queue_forget(queue: str) -> None:
    redis.Redis.from_url(settings.REDIS_URL).delete(queue)


@pytest.mark.django_db
def test_the_clients_request_id_is_returned_and_a_new_one_made_for_none_or_a_bad_one(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc123")["X-Request-ID"] == "abc123"
    made = client.get("/healthz")["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0
    for bad in ('x" injected="1', "a" * 65, "new\nline"):
        returned = client.get("/healthz", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert returned != bad and len(returned) == 32
    assert client.get("/healthz")["X-Request-ID"] != made  # one per request


def test_json_log_lines_carry_the_request_id():
    """LOG_FORMAT=json as settings configure it, in a process of its own: one JSON object a line."""
    script = ("import django; django.setup()\n"
              "from django.test import Client\n"
              "Client().get('/healthz', HTTP_X_REQUEST_ID='abc123')\n")
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "finetune_site.settings"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "finetune_site.access"]
    assert len(access) == 1, result.stderr
    line = access[0]
    assert line["request_id"] == "abc123" and line["level"] == "INFO" and line["time"]
    assert line["method"] == "GET" and line["path"] == "/healthz" and line["route"] == "healthz"
    assert line["status"] == 200 and line["duration_ms"] >= 0


def test_a_bad_log_format_is_refused_at_startup():
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "LOG_FORMAT": "xml", "DJANGO_SETTINGS_MODULE": "finetune_site.settings"})
    assert result.returncode != 0 and "LOG_FORMAT='xml': write plain or json" in result.stderr


def test_the_request_id_follows_a_job_into_its_tasks_and_events(live_base_model, tiny_model_path, no_live_workers):
    """Commits are real here (the tasks' on_commit sends happen inside them, as in a worker)."""
    queue_forget("default")
    queue_forget("training")
    user = make_user()
    dataset = make_dataset(user)
    body = {"model": "tiny-llama", "training_file": dataset.id}
    response = api_client(user).post("/v1/fine_tuning/jobs", body, format="json", HTTP_X_REQUEST_ID="abc123")
    assert response.status_code == 200, response.content
    assert response["X-Request-ID"] == "abc123"
    job = FineTuneJob.objects.get(pk=response.json()["id"])
    created = job.events.get(seq=1)
    assert created.message.startswith("Created fine-tuning job") and created.request_id == "abc123"

    # The validation task was queued with the id in its message headers...
    [message] = queued_messages("default", "jobs_app.tasks.job_validate")
    assert message["headers"]["request_id"] == "abc123" and job.id in message["headers"]["argsrepr"]
    queue_forget("default")

    # ...and, run with those headers, writes its events and queues the training run under the same id.
    tasks.job_validate.apply(args=[job.id], headers={"request_id": message["headers"]["request_id"]})
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.QUEUED
    later = job.events.filter(seq__gt=1)
    assert later.exists() and set(later.values_list("request_id", flat=True)) == {"abc123"}
    [run] = queued_messages("training", "jobs_app.tasks.job_run")
    assert run["headers"]["request_id"] == "abc123"
    queue_forget("training")

    events = api_client(user).get(f"/v1/fine_tuning/jobs/{job.id}/events?order=asc").json()["data"]
    assert [event["request_id"] for event in events] == ["abc123"] * len(events)


@pytest.mark.django_db
def test_a_task_queued_outside_a_request_gets_an_id_of_its_own(base_model):
    job_id = "ftjob-none"
    seen = []

    from celery.signals import task_prerun

    from finetune_site.request_id import request_id_get

    def remember(**kwargs):
        seen.append(request_id_get())

    task_prerun.connect(remember, weak=False)
    try:
        tasks.job_validate.apply(args=[job_id])
    finally:
        task_prerun.disconnect(remember)
    assert len(seen) == 1 and len(seen[0]) == 32
    assert request_id_get() == ""  # forgotten after the task
    assert not JobEvent.objects.exists()


def test_the_training_events_written_from_the_reporters_thread_keep_the_tasks_id(live_base_model):
    """The engine's events are written by a thread of their own; they carry the id the task runs under."""
    from finetune_site.request_id import request_id_reset, request_id_set
    from jobs_app.services import JobReporter
    from tests.factories import make_job
    from workers.events import LogLine, Metric

    job = make_job(status=FineTuneJob.Status.RUNNING)
    token = request_id_set("train-42")
    try:
        reporter = JobReporter(job)
        reporter(LogLine(message="Loading the base model"))
        reporter(Metric(step=1, total_steps=4, values={"loss": 1.5}))
        reporter.close()
    finally:
        request_id_reset(token)
    written = job.events.filter(seq__gt=1)
    assert written.count() == 2 and set(written.values_list("request_id", flat=True)) == {"train-42"}
