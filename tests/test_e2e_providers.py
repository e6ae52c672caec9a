"""A job on a remote provider, end to end: a second instance of this platform (its own database, web
server, broker and worker) is the remote; ours uploads the file, creates the job there and mirrors it."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests
from django.conf import settings

from jobs_app.models import FineTuneJob
from tests.conftest import WorkerPool, _test_database_url
from tests.e2e import ROOT, WebServer, client_for, upload, wait_finished, wait_for
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _other_redis() -> str:
    """The remote's broker, cache and channels: another database number of the same Redis than ours."""
    ours = urlsplit(settings.REDIS_URL)
    number = int(ours.path.strip("/") or 0)
    return urlunsplit(ours._replace(path=f"/{(number + 8) % 16}"))


REMOTE_REDIS = _other_redis()
FAST_POLL = {"REMOTE_POLL_SECONDS": "1"}
REMOTE_MAX_UPLOAD = 20_000


@dataclass
class Remote:
    url: str
    api_key: str


def _manage(database_url: str, *args: str) -> str:
    env = {"DATABASE_URL": database_url, "REDIS_URL": REMOTE_REDIS, "CHANNELS_PREFIX": "finetune-remote"}
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def remote(django_db_setup, django_db_blocker, collected_static, tiny_model_path):
    """Another instance of this platform, as a provider: migrated database, web server, worker, a user's key."""
    ours = _test_database_url(django_db_blocker)
    admin, name = ours.rsplit("/", 1)
    name = f"{name}_remote"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    database_url = f"{admin}/{name}"
    redis.Redis.from_url(REMOTE_REDIS).flushdb()
    _manage(database_url, "migrate", "--noinput", "-v0")
    key = _manage(database_url, "shell", "-c", (
        "from django.contrib.auth import get_user_model; from accounts_app.services import api_key_create; "
        "from models_app.base_models.services import base_model_builtin_ensure; base_model_builtin_ensure(); "
        "u = get_user_model().objects.create_user(username='remote-user', password='pw-remote-user'); "
        "print(api_key_create(user=u, name='provider')[1])")).strip().splitlines()[-1]
    # a smaller upload limit than ours: the remote refuses a file we accept
    server = WebServer(database_url, REDIS_URL=REMOTE_REDIS, CHANNELS_PREFIX="finetune-remote",
                       MAX_UPLOAD_BYTES=str(REMOTE_MAX_UPLOAD))
    pool = WorkerPool(database_url, name="remote", broker_url=REMOTE_REDIS)
    try:
        server.start()
        pool.ensure({"CHANNELS_PREFIX": "finetune-remote"})
        yield Remote(url=server.url + "/v1", api_key=key)
    finally:
        pool.stop()
        server.stop()
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _provider_add(live_server, client, name: str, base_url: str, api_key: str) -> dict:
    response = requests.post(live_server.url + "/v1/providers", timeout=10,
                             headers={"Authorization": f"Bearer {client.api_key}"},
                             json={"name": name, "base_url": base_url, "api_key": api_key})
    assert response.status_code == 200, response.text
    return response.json()


def _start(client, file_id: str, provider: str, n_epochs: int = 1):
    return client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id, extra_body={"provider": provider},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": n_epochs, "batch_size": 4}}})


def test_job_runs_on_a_remote_provider_and_is_mirrored_here(live_server, live_base_model, worker_pool, remote):
    worker_pool.ensure(FAST_POLL)
    client, user = client_for(live_server)
    provider = _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    assert provider["api_key"] == "…" + remote.api_key[-4:] and remote.api_key not in json.dumps(provider)
    file = upload(client, rows=classification_rows(8))

    estimate = client.post("/fine_tuning/jobs/estimate", cast_to=object, body={
        "model": "tiny-llama", "training_file": file.id, "provider": "remote",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}})
    assert estimate["provider"] == "remote" and estimate["trained_tokens"] > 0
    assert estimate["cost"]["amount"] is None and "no price for 'tiny-llama'" in estimate["cost"]["reason"]

    job = _start(client, file.id, "remote")
    job = wait_finished(client, job.id, timeout=400)
    assert job.status == "succeeded", job.error
    extra = job.model_extra
    assert extra["provider"] == "remote" and extra["remote_job_id"].startswith("ftjob-")
    assert job.fine_tuned_model.startswith("ft:tiny-llama:proj_")  # named there, in the remote user's project

    there = _remote_client(remote)
    remote_job = there.fine_tuning.jobs.retrieve(extra["remote_job_id"])
    assert remote_job.status == "succeeded" and remote_job.fine_tuned_model == job.fine_tuned_model
    assert remote_job.metadata["finetune_job"] == job.id and job.trained_tokens == remote_job.trained_tokens
    ours = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    theirs = list(there.fine_tuning.jobs.list_events(remote_job.id, limit=100))
    mirrored = [e.data["remote_event_id"] for e in ours if e.data and "remote_event_id" in e.data]
    assert sorted(mirrored) == sorted(e.id for e in theirs)  # each remote event once
    assert any(e.type == "metrics" and "train_loss" in e.data for e in ours)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.fine_tuned_model_checkpoint for c in checkpoints] == [
        c.fine_tuned_model_checkpoint for c in there.fine_tuning.jobs.checkpoints.list(remote_job.id).data]
    page = requests.get(f"{live_server.url}/jobs/{job.id}/", timeout=10, cookies=_login(user))
    assert job.fine_tuned_model in page.text and 'id="job-provider"' in page.text

    # a key the remote refuses: our job fails with the remote's own message
    _provider_add(live_server, client, "bad-key", remote.url, "sk-wrong-key-1234")
    job = wait_finished(client, _start(client, file.id, "bad-key").id, timeout=120)
    assert job.status == "failed" and job.error.code == "provider_refused"
    assert "bad-key refused it: Incorrect API key provided" in job.error.message
    assert FineTuneJob.objects.filter(provider__name="bad-key", remote_job_id="").count() == 1


def test_a_killed_worker_is_reaped_and_the_next_attempt_follows_the_same_remote_job(
        live_server, live_base_model, worker_pool, remote):
    from django.utils import timezone

    from jobs_app.services import jobs_reap

    worker_pool.ensure(FAST_POLL)
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    job = _start(client, upload(client, rows=classification_rows(8)).id, "remote")
    remote_id = wait_for(lambda: FineTuneJob.objects.get(pk=job.id).remote_job_id, timeout=120,
                         what="the remote job's id")
    worker_pool.kill()  # as a dead machine would: no heartbeat, no goodbye
    FineTuneJob.objects.filter(pk=job.id).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert job.id in jobs_reap()["reaped"]
    worker_pool.ensure(FAST_POLL)
    job = wait_finished(client, job.id, timeout=400, reap=True)
    assert job.status == "succeeded", job.error
    assert job.model_extra["attempt"] == 2 and job.model_extra["remote_job_id"] == remote_id
    there = _remote_client(remote)
    assert [j.id for j in there.fine_tuning.jobs.list(metadata={"finetune_job": job.id}).data] == [remote_id]
    assert there.fine_tuning.jobs.retrieve(remote_id).fine_tuned_model == job.fine_tuned_model


def test_cancel_here_cancels_the_remote_job(live_server, live_base_model, worker_pool, remote):
    worker_pool.ensure(FAST_POLL)
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    # long enough that it is still running there when cancelled here
    job = _start(client, upload(client, rows=classification_rows(8)).id, "remote", n_epochs=50)
    remote_id = wait_for(lambda: FineTuneJob.objects.get(pk=job.id).remote_job_id, timeout=120,
                         what="the remote job's id")
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    there = _remote_client(remote)
    wait_for(lambda: there.fine_tuning.jobs.retrieve(remote_id).status == "cancelled", timeout=60,
             what="the remote job cancelled")
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"Remote job {remote_id} cancelled on remote" in messages


def test_a_file_the_remote_refuses_fails_the_job_with_the_remotes_message(
        live_server, live_base_model, worker_pool, remote):
    worker_pool.ensure(FAST_POLL)
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    file = upload(client, rows=classification_rows(400))  # over the remote's upload limit, not ours
    assert file.bytes > REMOTE_MAX_UPLOAD
    job = wait_finished(client, _start(client, file.id, "remote").id, timeout=120)
    assert job.status == "failed" and job.error.code == "provider_refused"
    assert job.error.message.startswith("remote refused it: ") and str(REMOTE_MAX_UPLOAD) in job.error.message
    assert job.model_extra["remote_job_id"] is None


def test_a_model_only_the_remote_could_offer_is_sent_there_and_its_refusal_is_the_jobs_error(
        live_server, live_base_model, worker_pool, remote):
    worker_pool.ensure(FAST_POLL)
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=upload(
        client, rows=classification_rows(8)).id, extra_body={"provider": "remote"})
    assert job.model == "gpt-4o-mini-2024-07-18"  # not a base model here: the remote decides
    job = wait_finished(client, job.id, timeout=120)
    assert job.status == "failed" and job.error.code == "provider_refused"
    assert job.error.message.startswith("remote refused it: unknown base model 'gpt-4o-mini-2024-07-18'")
    assert FineTuneJob.objects.get(pk=job.id).remote_files["training_file"].startswith("file-")  # it got there


def test_an_attempt_that_died_after_creating_the_remote_job_finds_it_instead_of_creating_another(
        live_server, live_base_model, worker_pool, remote):
    from jobs_app.services.remote import _remote_start, provider_client

    worker_pool.stop()  # this test plays the next attempt itself
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "remote", remote.url, remote.api_key)
    job = FineTuneJob.objects.get(pk=_start(client, upload(client, rows=classification_rows(8)).id, "remote").id)
    there = _remote_client(remote)
    file = upload(there, rows=classification_rows(8))
    orphan = there.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id,
                                           metadata={"finetune_job": job.id})  # created, its id never stored
    FineTuneJob.objects.filter(pk=job.pk).update(status="running", attempt=2)
    job.refresh_from_db()
    try:
        assert _remote_start(provider_client(job.provider), job) == orphan.id
        assert FineTuneJob.objects.get(pk=job.pk).remote_job_id == orphan.id
        assert [j.id for j in there.fine_tuning.jobs.list(metadata={"finetune_job": job.id}).data] == [orphan.id]
    finally:
        there.fine_tuning.jobs.cancel(orphan.id)


def test_a_provider_that_cannot_be_reached_is_retried_then_fails_the_job(live_server, live_base_model, worker_pool):
    from tests.e2e import free_port

    worker_pool.ensure(FAST_POLL)
    client, _ = client_for(live_server)
    _provider_add(live_server, client, "gone", f"http://127.0.0.1:{free_port()}/v1", "sk-anything")
    job = wait_finished(client, _start(client, upload(client, rows=classification_rows(8)).id, "gone").id,
                        timeout=180)
    assert job.status == "failed" and job.error.code == "provider_unreachable"
    assert job.error.message.startswith("gone could not be reached: Connection error")
    assert job.model_extra["attempt"] == job.model_extra["max_attempts"]


def _remote_client(remote: Remote):
    import openai

    return openai.OpenAI(base_url=remote.url, api_key=remote.api_key, max_retries=0)


def _login(user) -> dict:
    """A browser session of ``user`` (the job page is a page, not the API)."""
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
