"""The playground socket through the real ASGI stack (origin check, session auth), the real Redis
channel layer and a real inference worker: both replies stream into their panes, and a model the
user may not see is refused before anything is generated."""

import asyncio
import html
import re

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.conf import settings

from finetune_site.asgi import application
from models_app.services import fine_tuned_model_create
from tests.factories import make_job, make_user
from tests.jobs_app.test_consumers import HOST, ORIGIN, session_cookie
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db(transaction=True)


def socket(cookie=None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/playground/", headers=[h for h in (HOST, ORIGIN, cookie) if h])


def form(**values) -> dict:
    """What htmx's ws-send sends: the form's fields, and the request headers."""
    return {"csrfmiddlewaretoken": "x", "system": "", "prompt": "What is the capital of France?",
            "left_model": "tiny-llama", "right_model": "tiny-llama", "temperature": "0", "max_tokens": "8",
            "seed": "", "HEADERS": {"HX-Request": "true"}, **values}


async def until_both_done(communicator, timeout: float = 120) -> list[str]:
    messages = []
    while sum('data-state="done"' in m or 'data-state="error"' in m for m in messages) < 2:
        messages.append(await communicator.receive_from(timeout=timeout))
    return messages


def pane_text(messages: list[str], side: str) -> str:
    pattern = rf'<span hx-swap-oob="beforeend:#playground-{side}-text">(.*?)</span>'
    return "".join(html.unescape(m) for message in messages for m in re.findall(pattern, message, re.S))


def test_both_replies_stream_into_their_panes(live_base_model, trained_adapter, inference_worker):
    user = make_user()
    tuned = fine_tuned_model_create(job=make_job(user), adapter_dir=trained_adapter)
    prompt, answer = classification_rows(24)[0]["messages"]
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(cookie)
        assert (await communicator.connect())[0]
        await communicator.send_json_to(form(prompt=prompt["content"], left_model=tuned.id,
                                             right_model="tiny-llama"))
        started = await communicator.receive_from(timeout=10)
        assert 'id="playground-errors" role="alert" hx-swap-oob="true"></div>' in started  # errors cleared
        assert f"<code>{tuned.id}</code>" in started and "<code>tiny-llama</code>" in started
        assert started.count('data-state="waiting"') == 2 and "Queued for the inference worker…" in started
        messages = await until_both_done(communicator)
        await communicator.disconnect()
        return messages

    messages = asyncio.run(scenario())
    assert pane_text(messages, "left").strip() == answer["content"]  # the tuned model learned the task
    assert len(pane_text(messages, "right")) > 0  # the base model says something else, 8 tokens of it
    # the tuned model is new to the worker: its pane says it loads it, with the seconds counting
    assert any('data-state="loading"' in m and "Loading the model (first request)…" in m and "data-elapsed" in m
               for m in messages)
    assert any("Generating… (model loaded for this request in " in m for m in messages)
    done = [m for m in messages if 'data-state="done"' in m]
    assert any("end of turn" in m for m in done) and any("max tokens reached" in m for m in done)


def test_another_users_model_is_refused_and_nothing_generates(live_base_model, trained_adapter):
    theirs = fine_tuned_model_create(job=make_job(make_user()), adapter_dir=trained_adapter)
    cookie = session_cookie(make_user())
    broker = redis.Redis.from_url(settings.REDIS_URL)
    queued_before = broker.llen("inference")

    async def scenario():
        communicator = socket(cookie)
        assert (await communicator.connect())[0]
        await communicator.send_json_to(form(left_model=theirs.id))
        refused = await communicator.receive_from(timeout=10)
        assert await communicator.receive_nothing(timeout=1)
        await communicator.disconnect()
        return refused

    refused = asyncio.run(scenario())
    assert 'id="playground-errors"' in refused and f"No such model: {theirs.id}" in refused
    assert "playground-left-text" not in refused
    assert broker.llen("inference") == queued_before  # nothing was queued


def test_anonymous_socket_is_refused(live_base_model):
    async def scenario():
        connected, _ = await socket().connect()
        assert not connected

    asyncio.run(scenario())
