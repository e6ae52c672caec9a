"""Per-version usage: what the inference worker counts for each chat reply, and how the API and the
model page show it."""

import pytest

from models_app.models import UsageSample
from models_app.selectors import model_usage
from models_app.services import fine_tuned_model_create, model_usage_record
from tests.api import api_client
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db
CHAT = "/v1/chat/completions"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def worker_here(monkeypatch):
    """The inference worker's task run in this process as soon as it is queued (the reply waits on the
    channel layer for the view to read it), so the whole path but Celery's hop is the real one."""
    from models_app.services import inference

    def queue(*, model, config, reply_channel, tag=""):
        inference.chat_completion_run(model_id=inference.model_public_id(model), config=config,
                                      reply_channel=reply_channel, tag=tag)

    monkeypatch.setattr(inference, "chat_completion_queue", queue)


@pytest.fixture
def model(base_model, trained_adapter):
    return fine_tuned_model_create(job=make_job(make_user("alice"), suffix="topics"), adapter_dir=trained_adapter)


def test_chat_requests_are_counted_per_version_with_tokens_and_latency(model, worker_here, client):
    api = api_client(model.owner)
    usages = []
    for tokens in (3, 5, 4):
        response = api.post(CHAT, {"model": "topics@^1", "messages": QUESTION, "temperature": 0,
                                   "max_tokens": tokens}, format="json")
        assert response.status_code == 200, response.content
        usages.append(response.json()["usage"])
    api.post(CHAT, {"model": "tiny-llama", "messages": QUESTION, "max_tokens": 2}, format="json")  # a base model

    body = api.get(f"/v1/registry/models/{model.id}/usage").json()
    assert (body["object"], body["model"], body["version"]) == ("model.usage", model.id, "1.0.0")
    assert body["requests"] == 3
    assert body["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert body["completion_tokens"] == sum(u["completion_tokens"] for u in usages)
    latency = body["latency_ms"]
    assert latency["samples"] == 3 and 0 < latency["p50"] <= latency["p95"]
    assert body["last_request_at"]

    client.force_login(model.owner)
    page = client.get(f"/models/{model.id}/").content.decode()
    usage_table = page.split('id="usage">', 1)[1].split("</table>", 1)[0]
    assert "<th scope=\"row\">Chat requests</th><td>3</td>" in usage_table
    assert f"<td>{body['completion_tokens']}</td>" in usage_table and f"{latency['p95']} ms" in usage_table


def test_a_version_never_called_shows_zero_usage(model, client):
    body = api_client(model.owner).get(f"/v1/registry/models/{model.id}/usage").json()
    assert (body["requests"], body["prompt_tokens"], body["completion_tokens"]) == (0, 0, 0)
    assert body["latency_ms"] == {"p50": None, "p95": None, "samples": 0} and body["last_request_at"] is None
    assert api_client(make_user()).get(f"/v1/registry/models/{model.id}/usage").status_code == 404


def test_percentiles_are_nearest_rank_over_the_recorded_requests(model):
    for latency in range(100, 0, -1):  # 100 ms .. 1 ms
        model_usage_record(model=model, prompt_tokens=10, completion_tokens=2, latency_ms=float(latency))
    usage = model_usage(model)
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (100, 1000, 200)
    assert (usage["latency_ms"]["p50"], usage["latency_ms"]["p95"]) == (50.0, 95.0)


def test_samples_are_trimmed_to_the_newest_but_totals_keep_counting(model, monkeypatch):
    from models_app.base_models import services as usage

    monkeypatch.setattr(usage, "USAGE_SAMPLES_KEPT", 5)
    monkeypatch.setattr(usage, "PRUNE_EVERY", 10)
    for latency in range(1, 21):
        model_usage_record(model=model, prompt_tokens=1, completion_tokens=1, latency_ms=float(latency))
    kept = sorted(UsageSample.objects.filter(model=model).values_list("latency_ms", flat=True))
    assert kept == [16.0, 17.0, 18.0, 19.0, 20.0]
    assert model_usage(model)["requests"] == 20


def test_chat_requests_on_a_base_model_are_counted_for_it_and_shown_on_its_page(base_model, worker_here, client):
    user = make_user("bob")
    api = api_client(user)
    usages = [api.post(CHAT, {"model": "tiny-llama", "messages": QUESTION, "temperature": 0, "max_tokens": tokens},
                       format="json").json()["usage"] for tokens in (2, 3)]

    body = api.get("/v1/base_models/tiny-llama/usage").json()
    assert (body["object"], body["model"], body["requests"]) == ("base_model.usage", "tiny-llama", 2)
    assert body["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert body["completion_tokens"] == sum(u["completion_tokens"] for u in usages)
    assert body["latency_ms"]["samples"] == 2 and 0 < body["latency_ms"]["p50"] <= body["latency_ms"]["p95"]
    assert body["last_request_at"]
    assert api.get("/v1/base_models/tiny-llama").json()["name"] == "tiny-llama"  # the model itself, as before
    assert api.get("/v1/base_models/no-such/usage").status_code == 404

    client.force_login(user)
    page = client.get("/base-models/tiny-llama/").content.decode()
    usage_table = page.split('id="usage">', 1)[1].split("</table>", 1)[0]
    assert "<th scope=\"row\">Chat requests</th><td>2</td>" in usage_table
    assert f"{body['latency_ms']['p95']} ms" in usage_table
