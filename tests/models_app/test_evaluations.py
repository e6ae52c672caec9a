"""Evaluations through the services and the API: base vs tuned, the gate, checkpoints, privacy."""

import json
import shutil

import pytest

from finetune_site.files import storage_put_dir
from jobs_app.models import Checkpoint
from models_app.models import Evaluation
from models_app.services import evaluation_create, evaluation_run, fine_tuned_model_create
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def validation(alice):
    return make_dataset(alice, rows=classification_rows(8, seed=5), name="valid.jsonl")


def _model(owner, adapter, validation=None, **job_fields):
    job = make_job(owner)
    job.validation_dataset = validation
    for key, value in job_fields.items():
        setattr(job, key, value)
    job.save(update_fields=["validation_dataset", *job_fields])
    return fine_tuned_model_create(job=job, adapter_dir=adapter)


def _run(model, dataset, **options) -> Evaluation:
    """Create and run here (the queued task never fires: the test transaction never commits)."""
    evaluation = evaluation_create(owner=model.owner, model=model, dataset=dataset, max_new_tokens=4, **options)
    evaluation_run(evaluation_id=evaluation.id)
    evaluation.refresh_from_db()
    return evaluation


def test_on_demand_evaluation_scores_base_and_tuned_on_the_same_rows(base_model, alice, validation,
                                                                     trained_adapter):
    model = _model(alice, trained_adapter)
    evaluation = _run(model, validation)
    assert evaluation.status == "succeeded", evaluation.error
    assert set(evaluation.metrics) == {"base", "tuned"} and evaluation.rows_evaluated == 8
    assert evaluation.metrics["tuned"]["eval_loss"] < evaluation.metrics["base"]["eval_loss"]
    assert evaluation.rows[0]["reference"] == "sports"
    assert evaluation.progress == 100 and evaluation.finished_at


def test_gate_promotes_a_model_that_beats_its_base(base_model, alice, validation, trained_adapter):
    gate = {"metric": "eval_loss", "min_improvement": 0.05, "alias": "staging"}
    model = _model(alice, trained_adapter, validation, promotion_gate=gate)
    _run(model, validation, kind=Evaluation.Kind.AUTO)
    model.refresh_from_db()
    assert model.promotion["passed"] is True and model.promotion["improvement"] > 0.05
    assert list(model.aliases.values_list("alias", flat=True)) == ["staging"]
    messages = list(model.job.events.values_list("message", flat=True))
    assert any(m.startswith("Promotion gate: eval_loss") and "promoted to staging" in m for m in messages)


def test_gate_keeps_but_does_not_promote_a_model_that_falls_short(base_model, alice, validation, trained_adapter):
    gate = {"metric": "eval_loss", "min_improvement": 0.99, "alias": "production"}
    model = _model(alice, trained_adapter, validation, promotion_gate=gate)
    _run(model, validation, kind=Evaluation.Kind.AUTO)
    model.refresh_from_db()
    assert model.promotion["passed"] is False and "at least +99.0% required" in model.promotion["reason"]
    assert not model.aliases.exists()


def test_every_checkpoint_is_evaluated_and_the_best_marked(base_model, alice, validation, trained_adapter,
                                                           untrained_adapter, tmp_path):
    model = _model(alice, trained_adapter, validation)
    _checkpoint_store(model.job, 5, _copy(untrained_adapter, tmp_path / "untrained"))
    _checkpoint_store(model.job, 10, _copy(trained_adapter, tmp_path / "trained"))
    evaluation = _run(model, validation, checkpoints=True)
    assert evaluation.status == "succeeded", evaluation.error
    assert {"checkpoint-5", "checkpoint-10"} <= set(evaluation.metrics)
    best = Checkpoint.objects.get(job=model.job, is_best=True)
    assert best.step == 10


def _copy(source, target):
    shutil.copytree(source, target)
    return target


def _checkpoint_store(job, step: int, directory):
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    (directory / "manifest.json").write_text(json.dumps({"step": step, "files": files}))
    prefix = f"jobs/{job.id}/checkpoints/step-{step}"
    storage_put_dir(directory, prefix, last="manifest.json")
    Checkpoint.objects.create(job=job, step=step, storage_path=prefix)


def test_gate_fails_when_its_metric_cannot_be_measured(base_model, alice, trained_adapter):
    questions = make_dataset(alice, rows=[{"text": "just text"}], name="text.jsonl")
    gate = {"metric": "accuracy", "threshold": 0.5}
    model = _model(alice, trained_adapter, questions, promotion_gate=gate)
    evaluation = _run(model, questions, kind=Evaluation.Kind.AUTO)
    assert evaluation.status == "succeeded"
    model.refresh_from_db()
    assert model.promotion["passed"] is False and "accuracy was not measured" in model.promotion["reason"]


def test_create_rejects_bad_options_with_the_parameter(base_model, alice, validation, trained_adapter):
    client = api_client(alice)
    model = _model(alice, trained_adapter)
    for body, param in (({"max_rows": 0}, "max_rows"), ({"max_new_tokens": 10_000}, "max_new_tokens"),
                        ({"checkpoints": True}, "checkpoints")):
        response = client.post("/v1/registry/evaluations", {"model": model.id, "file": validation.id, **body},
                               format="json")
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.json()


def test_api_creates_lists_and_shows_evaluations(base_model, alice, validation, django_capture_on_commit_callbacks):
    client = api_client(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post("/v1/registry/evaluations", {"model": "tiny-llama", "file": validation.id},
                               format="json")
    assert response.status_code == 201 and len(callbacks) == 1
    body = response.json()
    assert (body["status"], body["model"], body["compare_base"]) == ("queued", "tiny-llama", True)
    assert client.get("/v1/registry/evaluations").json()["data"][0]["id"] == body["id"]
    assert client.get(f"/v1/registry/evaluations/{body['id']}").json()["rows"] == []
    assert api_client(make_user("bob")).get(f"/v1/registry/evaluations/{body['id']}").status_code == 404


def test_another_users_model_or_file_is_a_400_naming_it(base_model, alice, validation, trained_adapter):
    bob = make_user("bob")
    model = _model(alice, trained_adapter)
    client = api_client(bob)
    own = make_dataset(bob)
    for body, param in (({"model": model.id, "file": own.id}, "model"),
                        ({"model": "tiny-llama", "file": validation.id}, "file")):
        response = client.post("/v1/registry/evaluations", body, format="json")
        assert response.status_code == 400 and response.json()["error"]["param"] == param
        assert response.json()["error"]["message"] == f"No such {param}: {body[param]}"
    assert not Evaluation.objects.exists()


def test_job_gate_needs_a_validation_file_and_a_known_metric(base_model, alice):
    client = api_client(alice)
    train = make_dataset(alice)
    body = {"model": "tiny-llama", "training_file": train.id}
    response = client.post("/v1/fine_tuning/jobs", {**body, "promotion_gate": {"metric": "eval_loss"}}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "promotion_gate"
    valid = make_dataset(alice, name="valid.jsonl")
    response = client.post("/v1/fine_tuning/jobs", {**body, "validation_file": valid.id,
                                                    "promotion_gate": {"metric": "f1"}}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "promotion_gate.metric"
    response = client.post("/v1/fine_tuning/jobs", {**body, "validation_file": valid.id,
                                                    "promotion_gate": {"metric": "accuracy", "threshold": 0.9}},
                           format="json")
    assert response.status_code == 200
    assert response.json()["promotion_gate"] == {"metric": "accuracy", "threshold": 0.9, "alias": "production"}
