"""GET never writes or queues work: every page and API read leaves the database and the queues as
they were (derived data is asked for on the write paths)."""

import re

import pytest
from celery.app.task import Task
from django.db import connection
from django.test.utils import CaptureQueriesContext

from datasets_app.models import Dataset
from models_app.models import Evaluation, FineTunedModel
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_metric, make_user

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.I)
# Bookkeeping of who is signed in (a key's last use), not state the request reads.
BOOKKEEPING = ("django_session", "accounts_app_")


@pytest.fixture
def world(base_model):
    user = make_user()
    dataset = make_dataset(user)
    job = make_job(user, dataset=dataset, status="succeeded")
    make_metric(job, 1, total_steps=1)
    model = FineTunedModel.objects.create(id=f"ft:tiny-llama:x:{job.id[-6:]}", owner=user, job=job,
                                          project_id=job.project_id,
                                          base_model=base_model, name="x", adapter="lora",
                                          adapter_path="models/x/adapter", artifact_files=[])
    evaluation = Evaluation.objects.create(id="eval-reads", owner=user, model=model,
                                           project_id=model.project_id, base_model=base_model,
                                           dataset=dataset, status="succeeded", metrics={"tuned": {"eval_loss": 1}})
    return {"user": user, "dataset": dataset, "job": job, "model": model, "evaluation": evaluation}


def _pages(w) -> list[str]:
    d, j, m, e = w["dataset"].id, w["job"].id, w["model"].id, w["evaluation"].id
    return ["/", "/dashboard/active-jobs/", "/datasets/", f"/datasets/{d}/", "/jobs/", f"/jobs/{j}/",
            f"/jobs/new/?dataset={d}", "/jobs/new/model/", "/jobs/new/review/", "/models/", f"/models/{m}/",
            "/models/registry/x/", f"/models/evaluations/{e}/", f"/models/playground/?model={m}"]


def _api(w) -> list[str]:
    d, j, m, e = w["dataset"].id, w["job"].id, w["model"].id, w["evaluation"].id
    return ["/v1/files", f"/v1/files/{d}", f"/v1/datasets/{d}", f"/v1/datasets/{d}/report",
            f"/v1/datasets/{d}/preview", f"/v1/datasets/{d}/stats", f"/v1/datasets/{d}/quality",
            f"/v1/datasets/{d}/dry-run", f"/v1/datasets/{d}/versions", "/v1/fine_tuning/jobs",
            f"/v1/fine_tuning/jobs/{j}", f"/v1/fine_tuning/jobs/{j}/events", f"/v1/fine_tuning/jobs/{j}/checkpoints",
            "/v1/models", f"/v1/models/{m}", f"/v1/registry/models/{m}/lineage", f"/v1/registry/models/{m}/card",
            f"/v1/registry/models/{m}/usage", "/v1/registry/names",
            "/v1/registry/names/x", "/v1/registry/evaluations", f"/v1/registry/evaluations/{e}"]


@pytest.fixture
def queued(monkeypatch):
    """Every task a request would send to the broker."""
    sent = []
    monkeypatch.setattr(Task, "apply_async", lambda self, *args, **kwargs: sent.append(self.name))
    return sent


def _writes(queries) -> list[str]:
    return [q["sql"] for q in queries if WRITE.match(q["sql"]) and not any(t in q["sql"] for t in BOOKKEEPING)]


def test_pages_and_api_reads_write_nothing_and_queue_nothing(client, world, queued):
    client.force_login(world["user"])
    session = client.session
    session["job_wizard"] = {"training_file": world["dataset"].id, "model": "tiny-llama",
                             "hyperparameters": {"n_epochs": "2"}}
    session.save()
    api = api_client(world["user"])
    for url in _pages(world) + _api(world):
        reader = client if not url.startswith("/v1/") else api
        with CaptureQueriesContext(connection) as queries:
            response = reader.get(url)
        assert response.status_code in (200, 202), f"{url}: {response.status_code}"
        assert _writes(queries.captured_queries) == [], url
    assert queued == []


def test_stats_are_asked_for_when_a_dataset_turns_ready_not_when_it_is_read(base_model, queued):
    dataset = make_dataset()
    assert dataset.status == Dataset.Status.READY
    # on the write path, in the upload's transaction: the page's counts and the quality report
    from datasets_app.models import TokenStats

    assert TokenStats.objects.filter(owner=dataset.owner, sha256=dataset.sha256, status="computing").count() == 1
    assert Dataset.objects.get(pk=dataset.pk).quality_status == "computing"
