"""Jobs on a remote provider naming the provider's own models (gpt-4o-mini-2024-07-18): registered here as a
remote base model, sent to the provider (a fake OpenAI-compatible API on an httpx mock transport), refused for
anything local."""

import json

import httpx2 as httpx
import openai
import pytest

from jobs_app.models import FineTuneJob
from jobs_app.services import job_create
from jobs_app.services.preflight import job_validate
from jobs_app.services.remote import job_remote_run
from models_app.base_models.models import BaseModel
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db
REMOTE_MODEL = "gpt-4o-mini-2024-07-18"
TUNED = f"ft:{REMOTE_MODEL}:acme::r3m0t3"


class FakeProvider:
    """An OpenAI-compatible fine-tuning API that knows only ``models``; it records the jobs it is asked for."""

    def __init__(self, models: set[str]) -> None:
        self.models = models
        self.created: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path.removeprefix("/v1"), request.method
        if method == "POST" and path == "/files":
            return httpx.Response(200, json={"id": "file-remote1", "object": "file", "bytes": 10, "created_at": 1,
                                             "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"})
        if method == "GET" and path == "/fine_tuning/jobs":
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        if method == "POST" and path == "/fine_tuning/jobs":
            body = json.loads(request.content)
            if body["model"] not in self.models:
                return httpx.Response(400, json={"error": {
                    "message": f"Model {body['model']} is not available for fine-tuning",
                    "type": "invalid_request_error", "param": "model", "code": "model_not_available"}})
            self.created.append(body)
            return httpx.Response(200, json=self._job("queued"))
        if method == "GET" and path == "/fine_tuning/jobs/ftjob-remote1":
            return httpx.Response(200, json=self._job("succeeded"))
        if method == "GET" and path.endswith(("/events", "/checkpoints")):
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        return httpx.Response(404, json={"error": {"message": f"no route {method} {path}"}})

    def _job(self, status: str) -> dict:
        done = status == "succeeded"
        return {"id": "ftjob-remote1", "object": "fine_tuning.job", "created_at": 1, "model": REMOTE_MODEL,
                "status": status, "training_file": "file-remote1", "validation_file": None, "result_files": [],
                "hyperparameters": {"n_epochs": 1}, "organization_id": "org", "seed": 1,
                "fine_tuned_model": TUNED if done else None, "trained_tokens": 2_000_000 if done else None,
                "finished_at": 2 if done else None, "error": None}


@pytest.fixture
def fake_provider(monkeypatch, base_model):
    fake = FakeProvider({REMOTE_MODEL})

    def client(provider):
        return openai.OpenAI(base_url=provider.base_url, api_key="sk-fake", max_retries=0,
                             http_client=httpx.Client(transport=httpx.MockTransport(fake)))

    monkeypatch.setattr("jobs_app.services.remote.provider_client", client)
    return fake


def _provider(client) -> None:
    response = client.post("/v1/providers", {"name": "acme", "base_url": "https://ft.example.com/v1",
                                             "api_key": "sk-test-1234"}, format="json")
    assert response.status_code == 200, response.content


def _run(job_id: str) -> FineTuneJob:
    job_validate(job_id=job_id)
    assert FineTuneJob.objects.get(pk=job_id).status == "queued"
    job_remote_run(job_id=job_id, worker="test-worker")
    return FineTuneJob.objects.get(pk=job_id)


def test_a_remote_only_model_is_sent_to_the_provider_and_its_tuned_model_stored(fake_provider):
    user = make_user()
    client = api_client(user)
    _provider(client)
    body = {"model": REMOTE_MODEL, "training_file": make_dataset(user).id, "provider": "acme"}
    created = client.post("/v1/fine_tuning/jobs", body, format="json")
    assert created.status_code == 200, created.content
    assert created.json()["model"] == REMOTE_MODEL
    base = BaseModel.objects.get(name=REMOTE_MODEL)
    assert base.is_remote and base.owner is None  # registered with the job, for jobs on providers only

    job = _run(created.json()["id"])
    assert job.status == "succeeded", job.error
    assert [c["model"] for c in fake_provider.created] == [REMOTE_MODEL]
    shown = client.get(f"/v1/fine_tuning/jobs/{job.id}").json()
    assert shown["fine_tuned_model"] == TUNED and shown["trained_tokens"] == 2_000_000
    assert shown["cost"]["amount"] == pytest.approx(2 * 3.0)  # OpenAI's price table, by the model's name

    # the tuned model lives at the provider: chat with it here is a clear 400 naming model
    chat = client.post("/v1/chat/completions", {"model": TUNED, "messages": [{"role": "user", "content": "hi"}]},
                       format="json")
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    assert "lives there" in chat.json()["error"]["message"] and "acme" in chat.json()["error"]["message"]
    export = client.post(f"/v1/registry/models/{TUNED}/exports", {"kind": "merged"}, format="json")
    assert export.status_code == 400 and export.json()["error"]["code"] == "model_is_remote"
    assert client.get(f"/v1/base_models/{REMOTE_MODEL}").json()["source"] == "remote"


def test_a_model_the_provider_refuses_fails_the_job_with_the_providers_message(fake_provider):
    user = make_user()
    _provider(api_client(user))
    job = job_create(owner=user, training_file=make_dataset(user).id, model="gpt-9-imaginary", provider="acme")
    job = _run(job.id)
    assert job.status == "failed" and job.error["code"] == "provider_refused"
    assert job.error["message"] == "acme refused it: Model gpt-9-imaginary is not available for fine-tuning"


def test_a_remote_model_is_refused_for_local_jobs_chat_and_evaluations(fake_provider):
    user = make_user()
    client = api_client(user)
    _provider(client)
    dataset = make_dataset(user)
    job_create(owner=user, training_file=dataset.id, model=REMOTE_MODEL, provider="acme")
    local = client.post("/v1/fine_tuning/jobs", {"model": REMOTE_MODEL, "training_file": dataset.id}, format="json")
    assert local.status_code == 400 and local.json()["error"]["param"] == "model"
    assert local.json()["error"]["code"] == "model_is_remote"
    chat = client.post("/v1/chat/completions", {"model": REMOTE_MODEL, "messages": [
        {"role": "user", "content": "hi"}]}, format="json")
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    assert "remote provider's model" in chat.json()["error"]["message"]
    evaluation = client.post("/v1/registry/evaluations", {"model": REMOTE_MODEL, "file": dataset.id}, format="json")
    assert evaluation.status_code == 400 and evaluation.json()["error"]["param"] == "model"
    assert REMOTE_MODEL not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert FineTuneJob.objects.count() == 1


def test_estimate_for_a_remote_model_prices_openais_table_and_labels_the_approximate_count(fake_provider):
    user = make_user()
    client = api_client(user)
    _provider(client)
    body = {"model": REMOTE_MODEL, "training_file": make_dataset(user).id, "provider": "acme",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}
    estimate = client.post("/v1/fine_tuning/jobs/estimate", body, format="json")
    assert estimate.status_code == 200, estimate.content
    estimate = estimate.json()
    assert estimate["model"] == REMOTE_MODEL and estimate["trained_tokens"] > 0
    assert estimate["tokens_basis"].startswith("approximation: counted with tiny-llama's tokenizer")
    assert estimate["cost"]["price"] == {"usd_per_million_tokens": 3.0}
    assert estimate["cost"]["amount"] == pytest.approx(estimate["trained_tokens"] / 1e6 * 3.0)
    assert not BaseModel.objects.filter(name=REMOTE_MODEL).exists() and not FineTuneJob.objects.exists()
