"""The dataset socket through the real ASGI stack (origin check, session auth) and the real
Redis channel layer: the current state on connect, validation progress, the verdict with the
page's body, token statistics filled in, and isolation."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from datasets_app import tasks
from datasets_app.broadcast import dataset_publish
from datasets_app.models import Dataset
from datasets_app.services.stats import _stats_key
from datasets_app.services.validation import _ProgressWriter
from finetune_site.asgi import application
from models_app.base_models.services import base_model_builtin_ensure
from tests.factories import make_dataset, make_user
from tests.jobs_app.test_consumers import HOST, ORIGIN, session_cookie
from workers.events import ValidationProgress

pytestmark = pytest.mark.django_db(transaction=True)


def socket(dataset_id: str, cookie=None, *, origin=ORIGIN) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/datasets/{dataset_id}/",
                                 headers=[h for h in (HOST, origin, cookie) if h])


def _validating(dataset: Dataset) -> None:
    Dataset.objects.filter(pk=dataset.pk).update(status="validating", progress=0.0)


def _ready(dataset_id: str) -> None:
    """The verdict as the validation service writes it: the row, then a publish after commit."""
    from django.db import transaction

    from datasets_app.services import dataset_transition

    with transaction.atomic():
        dataset_transition(dataset_id=dataset_id, to="ready", progress=1.0)


def test_status_progress_then_verdict_with_report_pushed(live_base_model):
    user = make_user()
    dataset = make_dataset(user)
    _validating(dataset)
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(dataset.id, cookie)
        assert (await communicator.connect())[0]
        current = await communicator.receive_from(timeout=5)
        assert 'id="dataset-status" hx-swap-oob="true"' in current and 'data-status="validating"' in current
        assert 'id="dataset-body"' not in current
        # the validator's progress writer: the row, then the group
        await database_sync_to_async(_ProgressWriter(dataset.id))(
            ValidationProgress(bytes_done=50, bytes_total=100, rows=8))
        progress = await communicator.receive_from(timeout=5)
        assert 'value="50"' in progress and "50% checked" in progress
        await database_sync_to_async(_ready)(dataset.id)
        verdict = await communicator.receive_from(timeout=5)
        assert 'data-status="ready"' in verdict and 'id="dataset-body" hx-swap-oob="true"' in verdict
        assert "16 rows read, 0 errors, 0 warnings" in verdict and "<strong>assistant:</strong> sports" in verdict
        assert 'id="stats-computing"' in verdict  # token counting asked for; filled in later
        await communicator.disconnect()

    asyncio.run(scenario())


def test_finished_token_stats_reach_an_open_page(live_base_model, monkeypatch):
    # the counting is asked for as the dataset turns ready; no worker may answer it before the test
    # does (one left running by an earlier test would, and win the race)
    monkeypatch.setattr(tasks.dataset_stats, "delay", lambda *args, **kwargs: None)
    user = make_user()
    dataset = make_dataset(user)
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(dataset.id, cookie)
        assert (await communicator.connect())[0]
        assert 'id="stats-computing"' in await communicator.receive_from(timeout=5)
        await database_sync_to_async(_stats_done)(dataset)
        filled = await communicator.receive_from(timeout=5)
        assert '<canvas id="token-histogram"' in filled and "350 tokens (218 prompt, 132 completion)" in filled
        await communicator.disconnect()

    asyncio.run(scenario())


def _stats_done(dataset: Dataset) -> None:
    from datasets_app.models import TokenStats

    TokenStats.objects.filter(**_stats_key(dataset, base_model_builtin_ensure(), "")).update(
        status="ready", rows=3, totals=[10, 40, 300], targets=[2, 30, 100])
    dataset_publish(dataset.id, {"status": "ready", "stats": "ready"})


def test_another_users_dataset_closes_the_socket_and_sends_nothing(live_base_model):
    owner, intruder = make_user(), make_user()
    dataset = make_dataset(owner)
    _validating(dataset)
    cookie = session_cookie(intruder)

    async def scenario():
        communicator = socket(dataset.id, cookie)
        assert not (await communicator.connect())[0]
        await database_sync_to_async(_ready)(dataset.id)
        assert await communicator.receive_nothing(timeout=0.5)

    asyncio.run(scenario())


def test_anonymous_unknown_and_foreign_origin_are_refused(live_base_model):
    user = make_user()
    dataset = make_dataset(user)
    cookie = session_cookie(user)

    async def scenario():
        assert not (await socket(dataset.id, None).connect())[0]
        assert not (await socket("file-nope", cookie).connect())[0]
        assert not (await socket(dataset.id, cookie, origin=None).connect())[0]
        assert not (await socket(dataset.id, cookie, origin=(b"origin", b"http://evil.example")).connect())[0]
        communicator = socket(dataset.id, cookie)
        assert (await communicator.connect())[0]
        await communicator.disconnect()

    asyncio.run(scenario())
