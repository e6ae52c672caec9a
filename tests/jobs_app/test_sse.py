"""GET /v1/fine_tuning/jobs/{id}/events?stream=true: the job's events as Server-Sent Events, resumable
with Last-Event-ID, until the job has finished."""

import json
import threading
import time
import warnings

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

from jobs_app.api import event_object
from jobs_app.models import FineTuneJob
from jobs_app.services import job_event_add, job_transition
from jobs_app.sse import job_events_stream
from tests.api import api_client
from tests.factories import make_job, make_metric, make_user


def parse_sse(body: bytes) -> list[dict]:
    """Each event of a stream as {"id", "event", "data"} (comments and the retry line left out)."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or not line:
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            events.append({"id": fields.get("id"), "event": fields.get("event", "message"),
                           "data": json.loads(fields["data"])})
    return events


def stream(client, job_id: str, **headers):
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/events?stream=true", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream" and response["Cache-Control"] == "no-cache"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sync test client reads the async stream whole, and says so
        return b"".join(response)


@pytest.mark.django_db
def test_a_finished_jobs_events_stream_oldest_first_then_end(base_model):
    job = make_job(status=FineTuneJob.Status.RUNNING)
    for step in (1, 2):
        make_metric(job, step)
    job_transition(job_id=job.id, to=FineTuneJob.Status.SUCCEEDED, finished_at=timezone.now())

    body = stream(api_client(job.owner), job.id)

    assert body.startswith(b"retry: 2000\n\n")
    events = parse_sse(body)
    assert [event["id"] for event in events[:-1]] == ["1", "2", "3", "4"]
    assert [event["data"]["seq"] for event in events[:-1]] == [1, 2, 3, 4]
    assert events[0]["data"]["message"].startswith("Created fine-tuning job")
    assert events[1]["data"]["type"] == "metrics" and events[1]["data"]["data"]["step"] == 1
    assert events[3]["data"]["message"] == "Job succeeded" and events[3]["data"]["object"] == "fine_tuning.job.event"
    assert events[-1] == {"id": None, "event": "end", "data": {"status": "succeeded"}}


@pytest.mark.django_db
def test_last_event_id_resumes_after_that_event(base_model):
    job = make_job(status=FineTuneJob.Status.RUNNING)
    for step in (1, 2, 3):
        make_metric(job, step)
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED)

    events = parse_sse(stream(api_client(job.owner), job.id, HTTP_LAST_EVENT_ID="2"))

    assert [event["id"] for event in events] == ["3", "4", None]
    assert events[-1]["data"] == {"status": "cancelled"}


@pytest.mark.django_db
def test_another_users_job_is_404_and_streams_nothing(base_model):
    job = make_job(status=FineTuneJob.Status.SUCCEEDED)
    response = api_client(make_user()).get(f"/v1/fine_tuning/jobs/{job.id}/events?stream=true")
    assert response.status_code == 404 and response.json()["error"]["message"].startswith("No such fine-tuning job")


@pytest.mark.django_db
def test_the_stream_wants_an_api_key(base_model):
    from rest_framework.test import APIClient

    job = make_job(status=FineTuneJob.Status.SUCCEEDED)
    assert APIClient().get(f"/v1/fine_tuning/jobs/{job.id}/events?stream=true").status_code == 401


def test_a_running_jobs_stream_follows_new_events_with_heartbeats_until_it_finishes(live_base_model):
    job = make_job(status=FineTuneJob.Status.RUNNING)

    def worker() -> None:
        try:
            time.sleep(0.6)
            make_metric(job, 1)
            time.sleep(0.6)
            job_event_add(job_id=job.id, message="Saved checkpoint at step 1")
            job_transition(job_id=job.id, to=FineTuneJob.Status.FAILED, finished_at=timezone.now())
        finally:
            connection.close()

    async def read() -> bytes:
        parts = []
        async for part in job_events_stream(job.id, after=0, render=event_object, poll_seconds=0.1,
                                            heartbeat_seconds=0.3):
            parts.append(part)
        return b"".join(parts)

    writer = threading.Thread(target=worker)
    writer.start()
    started = time.monotonic()
    body = async_to_sync(read)()
    writer.join()

    assert time.monotonic() - started >= 1.2  # it waited for the job rather than ending early
    assert b": keep-alive\n\n" in body
    events = parse_sse(body)
    assert [event["data"].get("message", "")[:10] for event in events[:-1]] == [
        "Created fi", "Step 1/10:", "Saved chec", "Job failed"]
    assert events[-1] == {"id": None, "event": "end", "data": {"status": "failed"}}
