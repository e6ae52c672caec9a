"""A vision job's promotion gate: a threshold on the held-out evaluation its job made as it trained,
decided when its classifier is registered (there is no base model to compare with)."""

import tempfile
from pathlib import Path

import pytest

from jobs_app.models import FineTuneJob
from jobs_app.services import job_create
from jobs_app.signals import job_succeeded
from models_app.base_models.services import base_model_builtin_ensure
from tests.api import api_client
from tests.factories import classifier_write, make_user, make_vision_dataset

pytestmark = pytest.mark.django_db
GATE = {"metric": "accuracy", "threshold": 0.9, "alias": "production"}


def _succeed(job, accuracy: float):
    """``job`` finished as the worker finishes a vision job, with ``accuracy`` on its held-out images."""
    classes = ["birds", "cats", "dogs"]
    FineTuneJob.objects.filter(pk=job.pk).update(status="succeeded", vision={
        "strategy": "native", "design": {"parameters": 1}, "best_epoch": 1, "epochs": 1,
        "evaluation": {"images": 10, "accuracy": accuracy, "macro_f1": accuracy, "classes": classes,
                       "per_class": [], "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}})
    job.refresh_from_db()
    with tempfile.TemporaryDirectory() as tmp:
        job_succeeded.send(sender=FineTuneJob, job=job, output_dir=classifier_write(Path(tmp) / "m", classes))
    return job.result_model


def test_a_classifier_is_promoted_only_when_its_held_out_accuracy_reaches_the_threshold():
    base_model_builtin_ensure()
    owner = make_user()
    dataset = make_vision_dataset(owner)

    def job():
        return job_create(owner=owner, training_file=dataset.id, model="cnn", objective="vision", suffix="pets",
                          hyperparameters={"strategy": "native", "n_epochs": 1}, promotion_gate=GATE)

    good, poor = _succeed(job(), accuracy=0.95), _succeed(job(), accuracy=0.5)
    good.refresh_from_db()
    assert good.promotion["passed"] and list(good.aliases.values_list("alias", flat=True)) == ["production"]
    assert not poor.promotion["passed"] and not poor.aliases.exists()
    notes = poor.job.events.filter(message__startswith="Promotion gate").get().message
    assert "accuracy 0.5 ≥ 0.9 required on the held-out images" in notes and "kept, not promoted" in notes


@pytest.mark.parametrize(("gate", "param"), [
    ({"metric": "accuracy", "min_improvement": 0.1}, "promotion_gate.threshold"),
    ({"metric": "eval_loss", "threshold": 0.5}, "promotion_gate.metric"),
])
def test_a_vision_gate_needs_a_threshold_on_a_held_out_metric(gate, param):
    base_model_builtin_ensure()
    owner = make_user()
    dataset = make_vision_dataset(owner)
    body = {"model": "cnn", "training_file": dataset.id, "promotion_gate": gate,
            "method": {"type": "vision", "vision": {"hyperparameters": {"n_epochs": 1}}}}
    response = api_client(owner).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.json()
    assert not FineTuneJob.objects.exists()
    accepted = api_client(owner).post("/v1/fine_tuning/jobs", {**body, "promotion_gate": GATE}, format="json")
    assert accepted.status_code == 200 and accepted.json()["promotion_gate"]["threshold"] == 0.9, accepted.json()
