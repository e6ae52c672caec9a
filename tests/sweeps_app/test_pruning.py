"""Pruning: a trial whose validation loss trails the complete trials' at the same pass is pruned (its
job cancelled "pruned by sweep", the trial PRUNED in the study) and the next trial starts; a trial at
or below the median, a last pass, or a sweep without pruning goes on. The real worker drives it in
test_e2e_sweeps."""

import pytest
from django.utils import timezone
from optuna.trial import TrialState

from jobs_app.models import FineTuneJob
from jobs_app.services import JobReporter, job_transition
from sweeps_app.models import Sweep, SweepTrial
from sweeps_app.services import sweep_study, sweep_trial_finish, sweep_trial_report
from tests.api import api_client
from tests.factories import make_dataset, make_metric, make_user
from workers.events import Metric

SPACE = {"learning_rate_multiplier": {"type": "loguniform", "low": 0.01, "high": 10}}
Status = FineTuneJob.Status


def _body(user, **overrides) -> dict:
    return {"model": "tiny-llama", "training_file": make_dataset(user).id,
            "validation_file": make_dataset(user, name="valid.jsonl").id, "search_space": SPACE,
            "objective": {"metric": "valid_loss"}, "max_trials": 4, "parallelism": 2,
            "pruning": {"type": "median", "startup_trials": 1}, **overrides}


def _sweep(user, **overrides) -> Sweep:
    response = api_client(user).post("/v1/sweeps", _body(user, **overrides), format="json")
    assert response.status_code == 200, response.json()
    return Sweep.objects.get(pk=response.json()["id"])


def _running(trial: SweepTrial) -> FineTuneJob:
    FineTuneJob.objects.filter(pk=trial.job_id).update(status=Status.RUNNING, attempt=1)
    return FineTuneJob.objects.get(pk=trial.job_id)


def _complete(trial: SweepTrial, losses: list[float]) -> None:
    """The trial's job ran a validation pass at steps 2, 4, 6 with ``losses``, then succeeded."""
    job = _running(trial)
    for index, loss in enumerate(losses, start=1):
        make_metric(job, 2 * index, total_steps=6, valid_loss=loss)
    job_transition(job_id=job.id, to=Status.SUCCEEDED, finished_at=timezone.now())
    sweep_trial_finish(job_id=job.id)


def _second_running(user, **overrides) -> tuple[Sweep, SweepTrial, FineTuneJob]:
    """A sweep whose trial 0 completed with validation losses 1.0, 0.8, 0.6 and whose trial 1 runs."""
    sweep = _sweep(user, **overrides)
    first, second = sweep.trials.order_by("number")
    _complete(first, [1.0, 0.8, 0.6])
    return sweep, second, _running(second)


@pytest.mark.django_db
def test_a_trial_above_the_median_at_a_pass_is_pruned_and_the_next_trial_starts(base_model):
    user = make_user()
    sweep, second, job = _second_running(user)
    make_metric(job, 2, total_steps=6, valid_loss=3.0)  # its first pass: far above trial 0's 1.0
    assert sweep_trial_report(job_id=job.id, step=2, total_steps=6) is True

    second.refresh_from_db()
    job.refresh_from_db()
    assert second.state == SweepTrial.State.PRUNED and second.value is None
    assert second.note.startswith("pruned by sweep: its best valid_loss 3 by validation pass 1 is worse than the "
                                  "median 1 of 1 complete trial(s)")
    assert job.status == Status.CANCELLED
    assert job.events.order_by("-seq").first().message.startswith(f"Job cancelled: pruned by sweep {sweep.id}")
    assert sweep_study(sweep).trials[1].state == TrialState.PRUNED
    assert sweep.trials.count() == 4  # trials 2 and 3 took the freed places
    body = api_client(user).get(f"/v1/sweeps/{sweep.id}").json()
    assert body["trials"][1]["state"] == "pruned" and body["trials"][1]["job_status"] == "cancelled"
    assert "pruned by sweep" in body["trials"][1]["note"]
    assert body["pruning"] == {"type": "median", "startup_trials": 1, "warmup_passes": 0}
    sweep_trial_finish(job_id=job.id)  # the cancel's own task leaves the pruned trial as it is
    assert sweep.trials.get(number=1).state == SweepTrial.State.PRUNED


@pytest.mark.django_db
@pytest.mark.parametrize(("loss", "step", "pruning", "pruned"), [
    (0.9, 2, {"type": "median", "startup_trials": 1}, False),  # better than the median
    (3.0, 6, {"type": "median", "startup_trials": 1}, False),  # the last pass: nothing left to save
    (3.0, 2, {"type": "median", "startup_trials": 2}, False),  # one complete trial, two needed
    (3.0, 2, {"type": "median", "startup_trials": 1, "warmup_passes": 1}, False),  # pass 1 is warm-up
    (3.0, 2, {"type": "none"}, False),
    (3.0, 2, {"type": "median", "startup_trials": 1}, True),
])
def test_the_pruning_decision(base_model, loss, step, pruning, pruned):
    _, _, job = _second_running(make_user(), pruning=pruning)
    make_metric(job, step, total_steps=6, valid_loss=loss)
    assert sweep_trial_report(job_id=job.id, step=step, total_steps=6) is pruned
    job.refresh_from_db()
    assert (job.status == Status.CANCELLED) is pruned


def test_the_workers_reporter_asks_the_sweep_at_each_validation_pass(live_base_model):
    """The path a real run takes: the engine's eval_loss, stored by the reporter, reaches the pruner."""
    sweep, _, job = _second_running(make_user())
    reporter = JobReporter(job)
    reporter(Metric(step=1, total_steps=6, values={"loss": 2.5}))
    reporter(Metric(step=2, total_steps=6, values={"eval_loss": 0.95}))  # below the median: goes on
    reporter.close()
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.RUNNING
    reporter = JobReporter(job)
    reporter(Metric(step=4, total_steps=6, values={"eval_loss": 2.0}))  # pass 2: above trial 0's 0.8
    reporter.close()
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.CANCELLED
    assert sweep.trials.get(number=1).state == SweepTrial.State.PRUNED


@pytest.mark.django_db
@pytest.mark.parametrize(("overrides", "param", "text"), [
    ({"pruning": {"type": "hyperband"}}, "pruning.type", "must be one of median, none"),
    ({"pruning": {"type": "median", "startup_trials": 0}}, "pruning.startup_trials", "from 1 to 1000"),
    ({"pruning": {"type": "median", "warmup_steps": 3}}, "pruning", "unknown key 'warmup_steps'"),
    ({"pruning": {"type": "median"}, "validation_file": None, "objective": {"metric": "train_loss"}},
     "pruning.type", "give validation_file"),
    ({"initial_points": [{"learning_rate_multiplier": 50}]}, "initial_points.0.learning_rate_multiplier",
     "outside the search space"),
    ({"initial_points": [{"n_epochs": 2}]}, "initial_points.0.n_epochs", "not in the search space"),
    ({"initial_points": {"learning_rate_multiplier": 1}}, "initial_points", "a list"),
])
def test_bad_pruning_or_initial_points_are_400s_naming_the_param(base_model, overrides, param, text):
    user = make_user()
    response = api_client(user).post("/v1/sweeps", _body(user, **overrides), format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and text in error["message"], error
    assert not Sweep.objects.exists() and not FineTuneJob.objects.exists()


@pytest.mark.django_db
def test_initial_points_are_the_first_trials_and_pruning_defaults_on_with_a_validation_file(base_model):
    user = make_user()
    sweep = _sweep(user, pruning=None, initial_points=[{"learning_rate_multiplier": 5},
                                                      {"learning_rate_multiplier": 0.02}])
    assert [t.params for t in sweep.trials.order_by("number")] == [{"learning_rate_multiplier": 5},
                                                                   {"learning_rate_multiplier": 0.02}]
    assert sweep.pruning == {"type": "median", "startup_trials": 2, "warmup_passes": 0}
    plain = _sweep(user, pruning=None, validation_file=None, objective={"metric": "train_loss"})
    assert plain.pruning == {"type": "none"}


@pytest.mark.django_db
def test_a_pass_a_resumed_attempt_ran_again_counts_once(base_model):
    """Passes are numbered by step: attempt 2, resumed before step 4, ran its pass again (a lower loss)."""
    from sweeps_app.services.trials import validation_losses

    user = make_user()
    sweep, second, job = _second_running(user)
    for step, loss in ((2, 3.0), (4, 2.5), (4, 0.9), (6, 0.7)):
        make_metric(job, step, total_steps=8, valid_loss=loss)
    assert validation_losses([second])[job.id] == {1: 3.0, 2: 0.9, 3: 0.7}


@pytest.mark.django_db
def test_a_pruned_trials_cancel_then_its_end_start_one_trial_in_its_place(base_model):
    """The prune starts the next trial; the cancelled job's own end (its task) must not start another."""
    user = make_user()
    sweep, second, job = _second_running(user, max_trials=6)
    make_metric(job, 2, total_steps=6, valid_loss=3.0)
    assert sweep_trial_report(job_id=job.id, step=2, total_steps=6) is True
    assert sweep.trials.count() == 4  # trials 1 and 2 ran; 3 took the pruned one's place
    sweep_trial_finish(job_id=job.id)
    sweep_trial_finish(job_id=job.id)  # a redelivered task
    assert list(sweep.trials.values_list("state", flat=True)) == ["complete", "pruned", "running", "running"]
