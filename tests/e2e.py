"""Helpers for end-to-end tests: the official openai client against a live server."""

import io
import socket
import time

import openai
from rest_framework.authtoken.models import Token

from tests.factories import jsonl_bytes, make_user
from workers.sample_data import classification_rows

LEARNABLE = {"n_epochs": 8, "learning_rate": 3e-3, "batch_size": 8}


def client_for(live_server, user=None) -> tuple[openai.OpenAI, object]:
    user = user or make_user()
    token = Token.objects.create(user=user)
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=token.key, max_retries=0), user


def upload(client, rows=None, name: str = "train.jsonl"):
    content = jsonl_bytes(rows if rows is not None else classification_rows(24))
    return client.files.create(file=(name, io.BytesIO(content)), purpose="fine-tune")


def start_job(client, file_id: str, **hyperparameters):
    return client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id,
        method={"type": "supervised", "supervised": {"hyperparameters": {**LEARNABLE, **hyperparameters}}},
    )


def wait_finished(client, job_id: str, timeout: float = 240, *, reap: bool = False):
    """Poll until the job ends; ``reap`` also plays celery beat's part (the periodic reaper)."""
    from jobs_app.services import jobs_reap

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        if reap:
            jobs_reap()
        time.sleep(0.5)
    raise AssertionError(f"{job_id} still {job.status} after {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
