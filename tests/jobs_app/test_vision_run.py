"""A vision job run in-process (no broker) with llm_designed: the designer is a stub callable (the
platform wires a chat endpoint); the accepted design is stored on the job and shown on its page, and a
designer whose every proposal is refused fails the job at once with the reason."""

import json

import pytest
from django.urls import reverse

from jobs_app.models import FineTuneJob
from jobs_app.services import job_create, job_run, job_validate
from models_app.base_models.services import base_model_builtin_ensure
from tests.factories import make_user, make_vision_dataset

pytestmark = pytest.mark.django_db(transaction=True)  # job_run writes events from a second thread

DESIGN = {
    "layers": [
        {"type": "conv", "out": 8, "kernel": 3},
        {"type": "relu"},
        {"type": "maxpool", "size": 2},
        {"type": "global_avg_pool"},
    ]
}


def _designer(replies: list[str], asked: list):
    def designer(messages):
        asked.append(messages)
        return replies[min(len(asked), len(replies)) - 1]

    return lambda: designer


def _llm_designed_job(monkeypatch, replies: list[str], asked: list, **hyperparameters) -> FineTuneJob:
    monkeypatch.setattr("jobs_app.services.vision.vision_designer", _designer(replies, asked))
    monkeypatch.setattr("jobs_app.services.running.vision_designer", _designer(replies, asked))
    base_model_builtin_ensure()
    user = make_user()
    job = job_create(
        owner=user,
        training_file=make_vision_dataset(user).id,
        model="cnn",
        objective="vision",
        hyperparameters={"strategy": "llm_designed", "n_epochs": 1, **hyperparameters},
    )
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.QUEUED
    return job


def test_llm_designed_job_stores_and_shows_its_design(monkeypatch, client):
    asked = []
    job = _llm_designed_job(monkeypatch, [json.dumps(DESIGN)], asked)
    assert asked == []  # creating the job asks nothing: the worker asks when it trains
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    assert len(asked) == 1 and job.vision["strategy"] == "llm_designed"
    assert job.vision["design"]["layers"] == DESIGN["layers"] and job.vision["design"]["proposals"] == 1
    assert job.vision["evaluation"]["classes"] == ["birds", "cats", "dogs"]
    assert job.result_model.adapter_path
    client.force_login(job.owner)
    page = client.get(reverse("jobs:detail", args=[job.id])).content.decode()
    assert 'id="job-vision"' in page and "llm_designed" in page and "conv out=8 kernel=3" in page
    assert "Confusion matrix" in page
    for url in (reverse("models:detail", args=[job.result_model.id]), reverse("models:list"), reverse("jobs:list")):
        assert client.get(url).status_code == 200, url


def test_a_designer_whose_proposals_are_all_refused_fails_the_job_with_the_reason(monkeypatch):
    asked = []
    too_big = json.dumps({"layers": [{"type": "conv", "out": 512, "kernel": 7}] * 2})
    job = _llm_designed_job(monkeypatch, ["no JSON here", too_big], asked, design_attempts=2, max_parameters=50_000)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED and job.attempt == 1  # not retried: it would ask the same
    assert job.error["code"] == "design_refused"
    assert "the designer's 2 proposals were all refused; the last: the network has" in job.error["message"]
    assert "over the budget of 50,000" in job.error["message"]
    assert "That design was refused: the reply holds no JSON object" in asked[1][-1]["content"]
    warnings = list(job.events.filter(level="warn").values_list("message", flat=True))
    assert any("Design proposal 1 of 2 refused" in message for message in warnings)
