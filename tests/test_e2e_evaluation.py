"""A real job with a validation file: evaluated against its base on the real worker, then gated."""

import time

import pytest
import requests

from tests.e2e import LEARNABLE, client_for, upload, wait_finished
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _get(live_server, key: str, path: str) -> dict:
    response = requests.get(live_server.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _evaluation_of(live_server, key: str, model_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _get(live_server, key, f"/v1/registry/models/{model_id}/evaluations")["data"]
        if found and found[0]["status"] in ("succeeded", "failed"):
            return _get(live_server, key, f"/v1/registry/evaluations/{found[0]['id']}")
        time.sleep(0.5)
    raise AssertionError(f"no finished evaluation of {model_id} after {timeout}s")


def test_tuned_model_beats_base_and_the_gate_promotes_it(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    train = upload(client, classification_rows(32))
    valid = upload(client, classification_rows(12, seed=5), name="valid.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id, validation_file=valid.id, suffix="topics",
        method={"type": "supervised", "supervised": {"hyperparameters": {**LEARNABLE, "save_steps": 8}}},
        extra_body={"promotion_gate": {"metric": "eval_loss", "min_improvement": 0.05, "alias": "production"},
                    "evaluate_checkpoints": True},
    )
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error

    evaluation = _evaluation_of(live_server, client.api_key, job.fine_tuned_model)
    assert evaluation["status"] == "succeeded", evaluation["error"]
    base, tuned = evaluation["metrics"]["base"], evaluation["metrics"]["tuned"]
    assert tuned["eval_loss"] < base["eval_loss"] * 0.75
    assert tuned["accuracy"] > base["accuracy"] and tuned["rougeL"] > base["rougeL"]
    assert evaluation["classification"] and evaluation["rows_evaluated"] == 12
    assert {"base", "tuned"} <= set(evaluation["rows"][0]["outputs"])
    assert any(name.startswith("checkpoint-") for name in evaluation["metrics"])

    model = client.models.retrieve(job.fine_tuned_model)
    assert model.aliases == ["production"] and model.promotion["passed"] is True
    assert client.models.retrieve("topics@production").id == job.fine_tuned_model
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sum(c.is_best for c in checkpoints) == 1
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(m.startswith("Promotion gate: eval_loss") and "promoted to production" in m for m in messages)


def test_a_model_that_fails_the_gate_is_kept_but_not_promoted(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    train = upload(client, classification_rows(16))
    valid = upload(client, classification_rows(8, seed=5), name="valid.jsonl")
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=train.id, validation_file=valid.id, suffix="strict",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"promotion_gate": {"metric": "accuracy", "threshold": 1.01}},
    )
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    _evaluation_of(live_server, client.api_key, job.fine_tuned_model)
    model = client.models.retrieve(job.fine_tuned_model)
    assert model.aliases == [] and model.promotion["passed"] is False
    assert "accuracy" in model.promotion["reason"]
