"""Helpers for end-to-end tests: the official openai client against a live server."""

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import requests

from tests.api import api_key_for
from tests.factories import jsonl_bytes, make_user
from workers.sample_data import classification_rows

LEARNABLE = {"n_epochs": 8, "learning_rate": 3e-3, "batch_size": 8}
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


def client_for(live_server, user=None) -> tuple[openai.OpenAI, object]:
    user = user or make_user()
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=api_key_for(user), max_retries=0), user


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


class WebServer:
    """The production web server (``python -m finetune_site.server``: uvicorn, HTTP and websockets)
    in a process of its own, on the test database, with DEBUG off unless ``env`` (variables added or
    overridden) asks for it."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {name: value for name, value in os.environ.items() if name != "DEBUG"}
        self.env = {**inherited, "DATABASE_URL": database_url, **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = open(ARTIFACTS / "web.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "finetune_site.server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, timeout=60, what="the web server")

    def _healthy(self) -> bool:
        assert self.process.poll() is None, "the web server exited; see tests/artifacts/web.log"
        try:
            return requests.get(self.url + "/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
