"""The dashboard socket through the real ASGI stack (origin check, session auth) and the real Redis
channel layer: the user's running and queued jobs on connect, live progress, and isolation."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from finetune_site.asgi import application
from jobs_app.models import FineTuneJob
from jobs_app.services import job_cancel
from tests.factories import make_job, make_metric, make_user
from tests.jobs_app.test_consumers import HOST, ORIGIN, receive_all, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def socket(cookie=None, *, origin=ORIGIN) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/dashboard/", headers=[h for h in (HOST, origin, cookie) if h])


def test_dashboard_socket_sends_the_list_then_moves_the_progress_bar(live_base_model):
    user = make_user()
    job = make_job(user, status="running")
    make_metric(job, 2, 10)
    finished = make_job(user, status="succeeded")
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(cookie)
        assert (await communicator.connect())[0]
        first = await communicator.receive_from()
        assert first.lstrip().startswith("<div") and 'id="active-jobs"' in first
        assert job.id in first and finished.id not in first and 'value="2"' in first
        await database_sync_to_async(make_metric)(job, 7, 10)
        moved = await communicator.receive_from(timeout=5)
        assert 'value="7"' in moved and "step <span class=\"step\">7</span> / <span class=\"total\">10</span>" in moved
        await database_sync_to_async(lambda: job_cancel(job=FineTuneJob.objects.get(pk=job.id)))()
        after_cancel = await receive_all(communicator)
        assert after_cancel and job.id not in after_cancel[-1] and "Nothing running." in after_cancel[-1]
        await communicator.disconnect()

    asyncio.run(scenario())


def test_dashboard_socket_never_carries_another_users_job(live_base_model):
    alice, bob = make_user(), make_user()
    alices = make_job(alice, status="running")
    bobs = make_job(bob, status="queued")
    alice_cookie, bob_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        alice_socket, bob_socket = socket(alice_cookie), socket(bob_cookie)
        assert (await alice_socket.connect())[0] and (await bob_socket.connect())[0]
        assert alices.id not in await bob_socket.receive_from()
        assert bobs.id not in await alice_socket.receive_from()
        await database_sync_to_async(make_metric)(alices, 3, 10)
        assert 'value="3"' in await alice_socket.receive_from(timeout=5)
        assert await bob_socket.receive_nothing(timeout=1)  # no message at all about Alice's job
        await database_sync_to_async(make_job)(alice, status="queued")  # a new job of Alice's
        assert await bob_socket.receive_nothing(timeout=1)
        assert all(alices.id not in message for message in await receive_all(bob_socket))
        await alice_socket.disconnect()
        await bob_socket.disconnect()

    asyncio.run(scenario())


def test_dashboard_socket_refuses_anonymous_and_foreign_origin(live_base_model):
    cookie = session_cookie(make_user())

    async def scenario():
        anonymous = socket(None)
        assert not (await anonymous.connect())[0]
        foreign = socket(cookie, origin=(b"origin", b"http://evil.example"))
        assert not (await foreign.connect())[0]
        for refused in (anonymous, foreign):  # await each consumer, so no task outlives the test
            await refused.disconnect()

    asyncio.run(scenario())


def test_socket_origin_must_match_scheme_host_and_port(live_base_model, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.trusted.example"]
    settings.ALLOWED_HOSTS = ["testserver"]
    cookie = session_cookie(make_user())

    def at(host: bytes, origin: bytes) -> WebsocketCommunicator:
        return WebsocketCommunicator(application, "/ws/dashboard/", headers=[(b"host", host), (b"origin", origin),
                                                                             cookie])

    async def opens(communicator) -> bool:
        accepted = (await communicator.connect(timeout=5))[0]
        if accepted:
            await communicator.disconnect()
        return accepted

    async def scenario():
        assert await opens(at(b"testserver:8000", b"http://testserver:8000"))
        assert await opens(at(b"testserver", b"http://testserver:80"))  # the default port, written out
        assert await opens(at(b"testserver:8000", b"https://app.example.com"))  # trusted
        assert await opens(at(b"testserver:8000", b"https://eu.trusted.example"))  # trusted subdomain
        for host, origin in [(b"testserver:8000", b"http://testserver:8001"),  # another port
                             (b"testserver:8000", b"http://testserver"),
                             (b"testserver:8000", b"https://testserver:8000"),  # another scheme
                             (b"testserver:8000", b"http://app.example.com"),  # trusted only over https
                             (b"evil.example", b"http://evil.example"),  # a host this site is not
                             (b"testserver", b"null")]:
            assert not await opens(at(host, origin)), (host, origin)

    asyncio.run(scenario())
