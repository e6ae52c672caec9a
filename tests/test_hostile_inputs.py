"""The hostile inputs of issue 11, kept as tests so they never come back: NUL characters, JSON nested
too deep, names too long, text that is not UTF-8, unknown websocket paths, and live updates across a
Redis flush. Each answers 400/404/409 in OpenAI's error shape under /v1 (never a 5xx) and stores nothing.
Run on PostgreSQL, which refuses NUL in text and jsonb; SQLite would hide half of them."""

import asyncio
import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from datasets_app.models import Dataset, DatasetUpload
from jobs_app.models import FineTuneJob
from models_app.base_models.models import BaseModel
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_upload, make_user

pytestmark = pytest.mark.django_db
NUL = "\x00"


def openai_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def every_route() -> list[str]:
    """Every URL pattern of the site but the admin's, with each of its parameters filled by ``a\\0``."""
    routes = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver) and "admin" not in str(pattern.pattern):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                routes.append("/" + prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns, "")
    return routes


# --- NUL -----------------------------------------------------------------------------------------

def test_a_nul_in_any_path_or_query_is_a_400_never_a_500(client, base_model):
    user = make_user()
    make_job(user)
    client.force_login(user)
    api = api_client(user)
    routes = every_route()
    assert len(routes) > 60 and "/v1/files/<str:file_id>" in routes
    for route in routes:
        with_nul = re.sub(r"<[^>]+>", "a" + NUL, route)
        plain = re.sub(r"<[^>]+>", "a", route)
        web = api if route.startswith("/v1") else client
        for method in ("get", "post", "delete"):
            if "<" in route:
                check_refused(getattr(web, method)(with_nul), with_nul, "path")
            check_refused(getattr(web, method)(plain + "?after=a%00&limit=%00"), plain, "query")


def check_refused(response, path: str, part: str) -> None:
    if path.startswith("/v1"):
        error = openai_error(response, 400)
        assert error["code"] == "bad_request" and f"The request's {part} contains a NUL" in error["message"], path
    else:
        assert response.status_code == 400, (path, response.status_code)


def test_a_nul_in_a_cookie_or_a_page_form_is_a_400(client):
    user = make_user()
    client.force_login(user)
    assert client.post("/jobs/new/model/", {"suffix": "x" + NUL}).status_code == 400
    # a quoted cookie's octal escapes are NULs once parsed: a session key that would reach the database
    assert client.get("/datasets/", HTTP_COOKIE='sessionid="' + "\\000" * 40 + '"').status_code == 400


@pytest.mark.parametrize("path, body, param", [
    ("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": "{dataset}", "method": {
        "type": "supervised", "supervised": {"hyperparameters": {"lora_target_modules": ["q_proj" + NUL]}}}},
     "lora_target_modules"),
    ("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": "{dataset}",
                              "metadata": {"note" + NUL: "x"}}, "metadata"),
    ("/v1/datasets/{dataset}/validate", {"column_map": {"question": "prompt" + NUL}}, "column_map"),
    ("/v1/datasets/{dataset}/prepare", {"operations": [{"op": "filter_length", "max_tokens": 10,
                                                        "model": "tiny-llama" + NUL}]}, "model"),
    ("/v1/datasets/uploads", {"filename": "train.jsonl", "column_map": {"q": "prompt" + NUL}}, "column_map"),
    ("/v1/base_models", {"name": "mine" + NUL, "source": "org/name"}, "name"),
])
def test_a_nul_inside_a_json_body_is_a_400_and_nothing_is_stored(base_model, path, body, param):
    user = make_user()
    dataset = make_dataset(user)
    def stored():
        return (FineTuneJob.objects.count(), Dataset.objects.count(), DatasetUpload.objects.count(),
                BaseModel.objects.count())

    before = stored()
    text = json.dumps(body).replace("{dataset}", dataset.id)
    response = api_client(user).post(path.replace("{dataset}", dataset.id), text, content_type="application/json")
    error = openai_error(response, 400)
    assert error["code"] == "parse_error" and "NUL character (\\u0000)" in error["message"], param
    assert stored() == before
    dataset.refresh_from_db()
    assert dataset.options == {}


# --- depth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100_000, 3_000, 65])
def test_json_nested_too_deep_is_a_400(base_model, depth):
    user = make_user()
    dataset = make_dataset(user)
    deep = "[" * depth + "]" * depth
    hyperparameters = '{"lora_target_modules": ' + deep + "}"
    body = (f'{{"model": "tiny-llama", "training_file": "{dataset.id}", "method": {{"type": "supervised", '
            f'"supervised": {{"hyperparameters": {hyperparameters}}}}}}}')
    error = openai_error(api_client(user).post("/v1/fine_tuning/jobs", body, content_type="application/json"), 400)
    assert error["code"] == "parse_error" and "nested more than 64 levels deep" in error["message"]
    assert not FineTuneJob.objects.exists()


def test_a_method_3000_deep_is_a_400(base_model):
    user = make_user()
    dataset = make_dataset(user)
    method = '{"type": "supervised", "supervised": ' * 3000 + "{}" + "}" * 3000
    body = f'{{"model": "tiny-llama", "training_file": "{dataset.id}", "method": {method}}}'
    error = openai_error(api_client(user).post("/v1/fine_tuning/jobs", body, content_type="application/json"), 400)
    assert "nested more than 64 levels deep" in error["message"]
    assert not FineTuneJob.objects.exists()


# --- websockets ----------------------------------------------------------------------------------

def websocket_outcome(path: str, cookie=None) -> tuple[bool, int | None]:
    """(accepted, close code) of a websocket handshake at ``path``, through the whole ASGI stack."""
    from channels.testing import WebsocketCommunicator

    from finetune_site.asgi import application
    from tests.jobs_app.test_consumers import HOST, ORIGIN

    async def handshake():
        communicator = WebsocketCommunicator(application, path, headers=[h for h in (HOST, ORIGIN, cookie) if h])
        accepted, code = await communicator.connect(timeout=5)
        if accepted:
            await communicator.disconnect()
        return accepted, code

    return asyncio.run(handshake())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/jobs/", "/ws/jobs/a\x00/", "/ws/datasets/a\x00/",
                                  "/ws/dashboard/?x=%00", "/ws/jobs/ftjob-x/?last_seq=%00"])
def test_a_websocket_to_an_unknown_path_or_with_a_nul_is_refused_cleanly(path):
    from tests.jobs_app.test_consumers import session_cookie

    assert websocket_outcome(path, session_cookie(make_user())) == (False, 1000)


NUL_SESSION = (b"cookie", b'sessionid="' + b"\\000" * 40 + b'"')  # parsed, a session key of 40 NULs


@pytest.mark.django_db(transaction=True)
def test_a_nul_session_cookie_is_refused_at_the_front_door_too(settings):
    from channels.testing import HttpCommunicator

    from finetune_site.asgi import application

    assert websocket_outcome("/ws/dashboard/", NUL_SESSION) == (False, 1000)
    # a body over the anonymous limit makes the front door look the session up before Django runs
    body = b"x" * (settings.MAX_ANONYMOUS_BODY_BYTES + 1)
    response = asyncio.run(HttpCommunicator(application, "POST", "/v1/files", body=body,
                                            headers=[NUL_SESSION, (b"content-length", str(len(body)).encode())])
                           .get_response(timeout=10))
    assert response["status"] == 401 and json.loads(response["body"])["error"]["code"] == "invalid_api_key"


@pytest.mark.django_db(transaction=True)
def test_the_playground_socket_ignores_json_nested_too_deep_and_stays_open():
    from channels.testing import WebsocketCommunicator

    from finetune_site.asgi import application
    from tests.jobs_app.test_consumers import HOST, ORIGIN, session_cookie

    cookie = session_cookie(make_user())

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/playground/", headers=[HOST, ORIGIN, cookie])
        assert (await communicator.connect())[0]
        await communicator.send_to(text_data="[" * 100_000 + "]" * 100_000)
        assert await communicator.receive_nothing(timeout=1)  # no answer, and no crash (that would close it)
        await communicator.send_to(text_data=json.dumps({"prompt": "hi", "left_model": "none", "right_model": "none"}))
        answer = await communicator.receive_from(timeout=10)
        await communicator.disconnect()
        return answer

    assert "No such model: none" in asyncio.run(scenario())


# --- lengths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a" * 300 + ".jsonl", "日本" * 50 + ".jsonl"])  # 306 bytes; 106 characters
def test_an_upload_named_past_255_bytes_is_a_400_and_nothing_is_stored(name):
    api = api_client(make_user())
    error = openai_error(api.post("/v1/datasets/uploads", {"filename": name}, format="json"), 400)
    assert error["param"] == "file" and "is 306 bytes long" in error["message"]
    assert "rename it (at most 200 printable characters, fewer outside ASCII)" in error["message"]
    error = openai_error(api.post("/v1/files", {"purpose": "fine-tune", "file": make_upload(name=name)},
                                  format="multipart"), 400)
    assert "rename it" in error["message"]
    assert not DatasetUpload.objects.exists() and not Dataset.objects.exists()


@pytest.mark.parametrize("operations, suffix", [([{"op": "dedup"}], ".v2.jsonl"),
                                                ([{"op": "split", "validation_share": 0.25}], ".v2.validation.jsonl")])
def test_a_version_of_a_file_named_255_characters_gets_a_name_that_fits(operations, suffix):
    user = make_user()
    dataset = make_dataset(user)
    long_name = "b" * 249 + ".jsonl"  # stored before names were limited to 200 bytes
    Dataset.objects.filter(pk=dataset.pk).update(filename=long_name)
    response = api_client(user).post(f"/v1/datasets/{dataset.id}/prepare", {"operations": operations}, format="json")
    assert response.status_code == 200, response.content
    names = [version["filename"] for version in response.json()["data"]]
    assert all(len(name) <= 255 and name.startswith("bbbb") for name in names), names
    assert names[-1].endswith(suffix)


# --- a file in use -------------------------------------------------------------------------------

def test_deleting_a_file_an_evaluation_uses_is_a_409_and_nothing_is_lost(base_model):
    from models_app.services import evaluation_create

    user = make_user()
    dataset = make_dataset(user)
    evaluation = evaluation_create(owner=user, model=base_model, dataset=dataset)
    error = openai_error(api_client(user).delete(f"/v1/files/{dataset.id}"), 409)
    assert error["code"] == "file_in_use" and f"evaluation {evaluation.id}" in error["message"]
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    assert api_client(user).get(f"/v1/files/{dataset.id}/content").status_code == 200


# --- numbers that are not numbers ----------------------------------------------------------------

@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_the_wizard_refuses_a_learning_rate_that_is_not_a_finite_number(client, base_model, text):
    user = make_user()
    client.force_login(user)
    client.post("/jobs/new/", {"training_file": make_dataset(user).id})
    response = client.post("/jobs/new/model/", {"model": "tiny-llama", "objective": "supervised", "adapter": "lora",
                                                "learning_rate": text})
    assert response.status_code == 200 and "must be a number or &quot;auto&quot;" in response.content.decode()
    check = client.post("/jobs/new/model/check/learning_rate/", {"model": "tiny-llama", "learning_rate": text})
    assert check.status_code == 200 and 'must be a number or' in check.content.decode()
    assert client.get("/jobs/new/review/")["Location"] == "/jobs/new/model/"  # sent back, not a 500
    assert not FineTuneJob.objects.exists()


# --- text that is not UTF-8 ----------------------------------------------------------------------

GOOD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello \\ud83d\\ude00"}]}'


SURROGATES = [
    ("train.jsonl", GOOD + "\n" + GOOD.replace("hi", "h\\ud800i") + "\n", "train.jsonl, line 2, messages[0].content"),
    ("train.jsonl", GOOD + "\n\n" + GOOD[:-1] + ', "note": {"x\\udc00": 1}}\n', "train.jsonl, line 3, note.x\\udc00"),
    ("train.json", "[" + GOOD + ",\n" + GOOD.replace("hello", "\\uDBFF") + "]", "train.json, line 2, "
     "messages[1].content"),
    ("train.csv", 'messages\n"[{""role"": ""user"", ""content"": ""\\ud800""}, {""role"": ""assistant"", '
     '""content"": ""x""}]"\n', "train.csv, line 2, messages[0].content"),
]


@pytest.mark.parametrize("name, content, where", SURROGATES)
def test_a_lone_surrogate_is_refused_at_upload_naming_file_line_and_field(name, content, where):
    response = api_client(make_user()).post(
        "/v1/files", {"purpose": "fine-tune", "file": make_upload(content.encode(), name)}, format="multipart")
    error = openai_error(response, 400)
    assert error["code"] == "invalid_file" and error["param"] == "file"
    assert f"{where}: holds text that cannot be encoded as UTF-8: a lone UTF-16 surrogate" in error["message"]
    assert not Dataset.objects.exists()


@pytest.mark.parametrize("name, content, where", SURROGATES)
def test_a_lone_surrogate_checked_by_the_worker_makes_the_file_invalid(settings, name, content, where):
    from datasets_app.services import dataset_validate

    settings.DATASET_INLINE_BYTES = 0  # the worker's check, as for a large file
    user = make_user()
    response = api_client(user).post(
        "/v1/files", {"purpose": "fine-tune", "file": make_upload(content.encode(), name)}, format="multipart")
    dataset = dataset_validate(dataset_id=response.json()["id"])
    assert dataset.status == Dataset.Status.INVALID and not dataset.training_file
    summary = dataset.validation_report["summary"]
    assert f"{where}: holds text that cannot be encoded as UTF-8: a lone UTF-16 surrogate" in summary, summary
    page = logged_in(user).get(f"/datasets/{dataset.id}/")
    assert page.status_code == 200 and "holds text that cannot be encoded as UTF-8" in page.content.decode()
    assert api_client(user).get(f"/v1/datasets/{dataset.id}/preview").json()["data"] == []  # not ready: no rows


def logged_in(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_surrogate_pairs_written_as_escapes_are_fine():
    content = (GOOD + "\n") * 3
    response = api_client(make_user()).post("/v1/files", {"purpose": "fine-tune",
                                                          "file": make_upload(content.encode(), "ok.jsonl")},
                                            format="multipart")
    assert Dataset.objects.get(pk=response.json()["id"]).status == Dataset.Status.READY


# --- a failed token count ------------------------------------------------------------------------

def test_a_failed_token_count_is_reported_with_its_error_and_polling_never_restarts_it(
        base_model, monkeypatch, django_capture_on_commit_callbacks):
    import workers.stats
    from datasets_app import tasks
    from datasets_app.models import TokenStats

    def crash(config):
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    user = make_user()
    dataset = make_dataset(user)  # ready: its count is asked for (the task is not run here)
    monkeypatch.setattr(workers.stats, "token_lengths", crash)
    with pytest.raises(UnicodeEncodeError):
        tasks.dataset_stats(dataset.id, base_model.name)
    stats = TokenStats.objects.get(owner=user)
    assert stats.status == "failed" and stats.error.startswith("UnicodeEncodeError: 'utf-8' codec can't encode")
    api, page = api_client(user), logged_in(user)
    with django_capture_on_commit_callbacks() as callbacks:
        for _ in range(3):
            response = api.get(f"/v1/datasets/{dataset.id}/stats")
            assert response.status_code == 200 and response.json()["status"] == "failed"
            assert response.json()["error"] == stats.error
            assert "Token counting failed: UnicodeEncodeError" in page.get(f"/datasets/{dataset.id}/").content.decode()
    assert not callbacks and TokenStats.objects.get(owner=user).status == "failed"


# --- live updates across a Redis flush -----------------------------------------------------------

async def received_until(communicator, text: str, *, timeout: float) -> list[str]:
    """Messages until one holds ``text``; fails after ``timeout`` seconds without it."""
    messages = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not messages or text not in messages[-1]:
        left = deadline - loop.time()
        assert left > 0, f"no message with {text!r} in {timeout} s; got {len(messages)} others"
        if await communicator.receive_nothing(timeout=min(left, 0.5)):
            continue
        messages.append(await communicator.receive_from())
    return messages


def channel_layer_flush() -> None:
    """What a Redis restart without persistence, or a FLUSHALL, does to the channel layer: every group
    and every queued message is forgotten. Only the layer's keys (its prefix) in the test's own Redis
    database are deleted: the Celery broker shares the database, and flushing its queue bindings would
    lose the tasks of later tests that run a worker."""
    import redis
    from django.conf import settings

    server = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(server.scan_iter(match=settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] + ":*"))
    assert keys, "the channel layer's keys were not found: the test would flush nothing"
    server.delete(*keys)


@pytest.mark.django_db(transaction=True)
def test_the_job_socket_gets_the_final_state_after_a_redis_flush_without_reconnecting(live_base_model, settings):
    from channels.db import database_sync_to_async

    from jobs_app.services import job_cancel
    from tests.factories import make_metric
    from tests.jobs_app.test_consumers import receive_all, session_cookie, socket

    settings.LIVE_HEARTBEAT_SECONDS = 1
    user = make_user()
    job = make_job(user, status="running")
    make_metric(job, 1, 10)
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(job.id, cookie)
        assert (await communicator.connect())[0]
        await receive_all(communicator)
        channel_layer_flush()
        await database_sync_to_async(make_metric)(job, 6, 10)
        await database_sync_to_async(lambda: job_cancel(job=FineTuneJob.objects.get(pk=job.id)))()
        messages = await received_until(communicator, 'data-status="cancelled"', timeout=10)
        await communicator.disconnect()
        return "".join(messages)

    caught_up = asyncio.run(scenario())
    assert "Job cancelled" in caught_up and "step <span class=\"step\">6</span>" in caught_up


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_socket_follows_jobs_after_a_redis_flush(live_base_model, settings):
    from channels.db import database_sync_to_async

    from jobs_app.services import job_cancel
    from tests.finetune_site.test_consumers import socket
    from tests.jobs_app.test_consumers import receive_all, session_cookie

    settings.LIVE_HEARTBEAT_SECONDS = 1
    user = make_user()
    job = make_job(user, status="running")
    cookie = session_cookie(user)

    async def scenario():
        communicator = socket(cookie)
        assert (await communicator.connect())[0]
        assert job.id in (await receive_all(communicator))[-1]
        channel_layer_flush()
        await database_sync_to_async(lambda: job_cancel(job=FineTuneJob.objects.get(pk=job.id)))()
        await received_until(communicator, "Nothing running.", timeout=10)
        assert await communicator.receive_nothing(timeout=2.5)  # heartbeats send nothing when nothing changed
        await communicator.disconnect()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_live_socket_closes_with_1011_when_the_channel_layer_is_down_so_the_page_reconnects(
        live_base_model, settings, monkeypatch):
    from channels.layers import get_channel_layer

    from tests.finetune_site.test_consumers import socket
    from tests.jobs_app.test_consumers import receive_all, session_cookie

    settings.LIVE_HEARTBEAT_SECONDS = 1
    cookie = session_cookie(make_user())

    async def down(*args, **kwargs):
        raise ConnectionError("Redis is restarting")

    async def scenario():
        communicator = socket(cookie)
        assert (await communicator.connect())[0]
        await receive_all(communicator)
        monkeypatch.setattr(get_channel_layer(), "group_add", down)
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 1011}

    asyncio.run(scenario())
