"""A sweep's objective may be a metric of the evaluation each trial's model gets when its job ends;
a sweep can be cancelled (no new trials, its unfinished jobs cancelled) from the API or its page."""

import pytest
from django.test import Client
from django.utils import timezone

from jobs_app.models import FineTuneJob
from jobs_app.services import job_transition
from models_app.models import Evaluation, FineTunedModel
from models_app.signals import evaluation_finished
from sweeps_app.models import Sweep, SweepTrial
from sweeps_app.services import sweep_trial_finish
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


def _sweep(user, **overrides) -> dict:
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id,
            "validation_file": make_dataset(user, name="valid.jsonl").id,
            "search_space": {"learning_rate_multiplier": {"type": "loguniform", "low": 0.5, "high": 4}},
            "objective": {"metric": "accuracy"}, "max_trials": 3, "parallelism": 2, **overrides}
    response = api_client(user).post("/v1/sweeps", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def _succeed_with_evaluation(trial: SweepTrial, base_model, **evaluation) -> Evaluation:
    """The trial's job succeeded, made a model version, and its automatic evaluation was queued."""
    job = trial.job
    FineTuneJob.objects.filter(pk=job.pk).update(status=Status.RUNNING)
    job_transition(job_id=job.id, to=Status.SUCCEEDED, finished_at=timezone.now())
    model = FineTunedModel.objects.create(id=f"ft:tiny-llama:x:{job.id[-6:]}", owner=job.owner, job=job,
                                          project_id=job.project_id, base_model=base_model, name=f"x{trial.number}",
                                          adapter="lora", adapter_path="models/x/adapter")
    return Evaluation.objects.create(id=f"eval-{job.id[-8:]}", owner=job.owner, model=model, base_model=base_model,
                                     project_id=job.project_id, dataset=job.validation_dataset,
                                     kind=Evaluation.Kind.AUTO, **evaluation)


def test_an_evaluation_metric_objective_scores_each_trial_when_its_evaluation_ends(
        base_model, django_capture_on_commit_callbacks):
    user = make_user()
    body = _sweep(user)
    assert body["objective"] == {"metric": "accuracy", "direction": "maximize"}  # accuracy: higher is better
    sweep = Sweep.objects.get(pk=body["id"])
    first, second = sweep.trials.order_by("number")

    evaluation = _succeed_with_evaluation(first, base_model)
    sweep_trial_finish(job_id=first.job_id)
    first.refresh_from_db()
    assert first.state == SweepTrial.State.RUNNING  # its job ended, its evaluation has not
    metrics = {"base": {"accuracy": 0.25}, "tuned": {"accuracy": 0.75}}
    Evaluation.objects.filter(pk=evaluation.pk).update(status=Evaluation.Status.SUCCEEDED, metrics=metrics)
    with django_capture_on_commit_callbacks() as queued:  # the evaluation's end queues the trial's scoring
        evaluation_finished.send(sender=Evaluation, evaluation=Evaluation.objects.get(pk=evaluation.pk))
    assert len(queued) == 1
    sweep_trial_finish(job_id=first.job_id)
    first.refresh_from_db()
    assert first.state == SweepTrial.State.COMPLETE and first.value == 0.75  # the tuned model's, not the base's

    _succeed_with_evaluation(second, base_model, status=Evaluation.Status.SUCCEEDED,
                             metrics={"tuned": {"eval_loss": 2.0}})  # answers that are not labels: no accuracy
    sweep_trial_finish(job_id=second.job_id)
    second.refresh_from_db()
    assert second.state == SweepTrial.State.FAILED and "measured no accuracy" in second.note

    third = sweep.trials.get(number=2)
    _succeed_with_evaluation(third, base_model, status=Evaluation.Status.SUCCEEDED,
                             metrics={"tuned": {"accuracy": 0.5}})
    sweep_trial_finish(job_id=third.job_id)
    body = api_client(user).get(f"/v1/sweeps/{sweep.id}").json()
    assert body["status"] == "succeeded" and body["best_trial"]["number"] == 0  # maximised: 0.75 beats 0.5


@pytest.mark.parametrize(("objective", "overrides", "text"), [
    ({"metric": "f1_macro"}, {}, "or eval_loss, perplexity, bleu"),
    ({"metric": "exact_match"}, {"validation_file": None, "pruning": {"type": "none"}},
     "measured on the evaluation of the validation file"),
])
def test_an_unknown_or_unmeasurable_objective_is_a_400_naming_it(base_model, objective, overrides, text):
    user = make_user()
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id,
            "validation_file": make_dataset(user, name="valid.jsonl").id,
            "search_space": {"n_epochs": {"type": "int", "low": 1, "high": 2}}, "objective": objective,
            "max_trials": 2, **overrides}
    response = api_client(user).post("/v1/sweeps", body, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "objective.metric" and text in error["message"], error
    assert not Sweep.objects.exists()


def test_cancel_stops_new_trials_and_cancels_the_unfinished_jobs(base_model):
    user = make_user()
    body = _sweep(user, objective={"metric": "valid_loss"})
    sweep = Sweep.objects.get(pk=body["id"])
    running, queued = (t.job for t in sweep.trials.order_by("number"))
    FineTuneJob.objects.filter(pk=running.pk).update(status=Status.RUNNING, attempt=1)
    assert api_client(make_user()).post(f"/v1/sweeps/{sweep.id}/cancel").status_code == 404

    cancelled = api_client(user).post(f"/v1/sweeps/{sweep.id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert [t["state"] for t in cancelled["trials"]] == ["cancelled", "cancelled"]
    assert [t["job_status"] for t in cancelled["trials"]] == ["cancelled", "cancelled"]
    assert running.events.order_by("-seq").first().message == f"Job cancelled: its sweep {sweep.id} was cancelled"
    sweep_trial_finish(job_id=queued.id)  # the cancelled jobs' own tasks start nothing
    assert sweep.trials.count() == 2
    again = api_client(user).post(f"/v1/sweeps/{sweep.id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "sweep_finished"
    assert "has already been cancelled" in again.json()["error"]["message"]


def test_the_page_offers_cancel_while_the_sweep_runs(base_model):
    user = make_user()
    sweep_id = _sweep(user, objective={"metric": "valid_loss"})["id"]
    browser = Client()
    browser.force_login(user)
    assert 'id="cancel-sweep-form"' in browser.get(f"/sweeps/{sweep_id}/").content.decode()
    page = browser.post(f"/sweeps/{sweep_id}/cancel/", follow=True).content.decode()
    assert Sweep.objects.get(pk=sweep_id).status == Sweep.Status.CANCELLED
    assert f"Sweep {sweep_id} cancelled" in page and 'id="cancel-sweep-form"' not in page
    assert not FineTuneJob.objects.exclude(status=Status.CANCELLED).exists()
