"""Sweeps: bad input is a 400 naming its param with nothing stored; trials are jobs; a trial's end
advances the sweep (asked of the service here; the real worker drives it in test_e2e_sweeps)."""

import pytest
from django.test import Client
from django.utils import timezone

from jobs_app.models import FineTuneJob
from jobs_app.services import job_transition
from sweeps_app.models import Sweep, SweepTrial
from sweeps_app.services import sweep_trial_finish, sweeps_catch_up
from tests.api import api_client
from tests.factories import make_dataset, make_metric, make_user

pytestmark = pytest.mark.django_db
SPACE = {"learning_rate_multiplier": {"type": "loguniform", "low": 0.5, "high": 4},
         "n_epochs": {"type": "int", "low": 1, "high": 2},
         "batch_size": {"type": "categorical", "values": [2, 4]}}


def _body(user, **overrides) -> dict:
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id,
            "validation_file": make_dataset(user, name="valid.jsonl").id, "search_space": SPACE,
            "objective": {"metric": "valid_loss", "direction": "minimize"}, "max_trials": 4, "parallelism": 2}
    return {**body, **overrides}


@pytest.mark.parametrize(("overrides", "param", "text"), [
    ({"search_space": {"foo": {"type": "uniform", "low": 0, "high": 1}}}, "search_space.foo", "not a hyperparameter"),
    ({"search_space": {"n_epochs": {"type": "int", "low": 3, "high": 3}}}, "search_space.n_epochs", "empty range"),
    ({"search_space": {"n_epochs": {"type": "int", "low": 0, "high": 3}}}, "search_space.n_epochs", "from 1 to 100"),
    ({"search_space": {"n_epochs": {"type": "uniform", "low": 2, "high": 2.5}}}, "search_space.n_epochs",
     "empty range"),
    ({"search_space": {"learning_rate": {"type": "int", "low": 0, "high": 1}}}, "search_space.learning_rate",
     "takes no int range"),
    ({"search_space": {"learning_rate_multiplier": {"type": "loguniform", "low": 2, "high": 1}}},
     "search_space.learning_rate_multiplier", "empty range"),
    ({"search_space": {"batch_size": {"type": "categorical", "values": []}}}, "search_space.batch_size", "non-empty"),
    ({"search_space": {"adapter": {"type": "uniform", "low": 0, "high": 1}}}, "search_space.adapter",
     "categorical values"),
    ({"search_space": {"adapter": {"type": "categorical", "values": ["lora", "turbo"]}}}, "search_space.adapter",
     "must be one of"),
    ({"search_space": {"beta": {"type": "uniform", "low": 0.1, "high": 1}}}, "search_space.beta",
     "does not apply to supervised"),
    ({"search_space": {"n_epochs": {"type": "gaussian"}}}, "search_space.n_epochs", "must be one of uniform"),
    ({"search_space": {}}, "search_space", "at least one"),
    ({"objective": {"metric": "f1"}}, "objective.metric", "must be one of valid_loss"),
    ({"objective": {"metric": "valid_loss", "direction": "up"}}, "objective.direction", "minimize or maximize"),
    ({"validation_file": None}, "objective.metric", "give validation_file"),
    ({"max_trials": 0}, "max_trials", "from 1 to 100"),
    ({"parallelism": 5}, "parallelism", "from 1 to 4"),
    ({"model": "no-such-model"}, "model", "unknown base model"),
    ({"search_space": {"max_length": {"type": "int", "low": 64, "high": 4096}}}, "search_space.max_length",
     "context of 2048"),
])
def test_bad_sweeps_are_400s_naming_the_param_and_store_nothing(base_model, overrides, param, text):
    user = make_user()
    response = api_client(user).post("/v1/sweeps", _body(user, **overrides), format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and text in error["message"], error
    assert not Sweep.objects.exists() and not FineTuneJob.objects.exists()


def test_sweep_starts_parallelism_trials_as_jobs_with_values_inside_the_space(base_model):
    user = make_user()
    body = api_client(user).post("/v1/sweeps", _body(user), format="json").json()
    assert body["status"] == "running" and body["objective"] == {"metric": "valid_loss", "direction": "minimize"}
    assert [t["number"] for t in body["trials"]] == [0, 1] and body["best_trial"] is None
    for trial in body["trials"]:
        job = FineTuneJob.objects.get(pk=trial["job_id"])
        params = trial["params"]
        assert 0.5 <= params["learning_rate_multiplier"] <= 4 and params["n_epochs"] in (1, 2)
        assert params["batch_size"] in (2, 4)
        assert job.hyperparameters["n_epochs"] == params["n_epochs"]
        assert job.hyperparameters["batch_size"] == params["batch_size"]
        assert job.metadata == {"sweep": body["id"], "trial": str(trial["number"])}
        assert job.validation_dataset_id == body["validation_file"]
    assert api_client(make_user()).get(f"/v1/sweeps/{body['id']}").status_code == 404


def _end(job: FineTuneJob, *, valid_loss: float | None, status=FineTuneJob.Status.SUCCEEDED) -> None:
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.RUNNING)
    if valid_loss is not None:
        make_metric(job, 1, total_steps=1, valid_loss=valid_loss)
    job_transition(job_id=job.id, to=status, finished_at=timezone.now())
    sweep_trial_finish(job_id=job.id)


def test_each_trial_end_asks_for_the_next_until_max_trials_then_the_best_is_the_lowest(base_model):
    user = make_user()
    sweep = Sweep.objects.get(pk=api_client(user).post("/v1/sweeps", _body(user), format="json").json()["id"])
    losses = {0: 1.5, 1: None, 2: 0.7, 3: 1.1}  # trial 1 fails
    for number, loss in losses.items():
        trial = sweep.trials.get(number=number)
        assert sweep.trials.filter(state=SweepTrial.State.RUNNING).count() <= 2
        _end(trial.job, valid_loss=loss, status=FineTuneJob.Status.FAILED if loss is None else
             FineTuneJob.Status.SUCCEEDED)
    body = api_client(user).get(f"/v1/sweeps/{sweep.id}").json()
    assert body["status"] == "succeeded" and len(body["trials"]) == 4
    assert [t["state"] for t in body["trials"]] == ["complete", "failed", "complete", "complete"]
    assert body["trials"][1]["note"].startswith("the job failed")
    assert body["best_trial"]["number"] == 2 and body["best_trial"]["value"] == 0.7
    sweep_trial_finish(job_id=sweep.trials.get(number=0).job_id)  # a repeated task changes nothing
    assert sweep.trials.count() == 4


def test_a_trial_whose_end_was_not_heard_is_caught_up(base_model):
    user = make_user()
    sweep = Sweep.objects.get(pk=api_client(user).post("/v1/sweeps", _body(user), format="json").json()["id"])
    job = sweep.trials.get(number=0).job
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.RUNNING)
    make_metric(job, 1, total_steps=1, valid_loss=0.9)
    job_transition(job_id=job.id, to=FineTuneJob.Status.SUCCEEDED, finished_at=timezone.now())  # task lost
    assert sweep.trials.get(number=0).state == SweepTrial.State.RUNNING
    assert sweeps_catch_up() == 1
    assert sweep.trials.get(number=0).value == 0.9 and sweep.trials.count() == 3
    assert sweeps_catch_up() == 0


def test_promote_best_without_a_complete_trial_is_a_409_and_the_page_shows_trials(base_model):
    user = make_user()
    body = api_client(user).post("/v1/sweeps", _body(user), format="json").json()
    refused = api_client(user).post(f"/v1/sweeps/{body['id']}/promote_best", {}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_best_trial"
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/sweeps/{body['id']}/").content.decode()
    assert 'id="trial-table"' in page and body["trials"][0]["job_id"] in page and "Promote best" not in page
    assert body["id"] in browser.get("/sweeps/").content.decode()
