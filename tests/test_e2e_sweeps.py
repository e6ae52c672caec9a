"""A sweep of 4 trials, 2 at a time, through the real worker on the tiny model: Optuna is asked for each
next trial when a job ends, every trial finishes, the best is the lowest valid_loss, and it is promoted."""

import time

import pytest
import requests
from django.test import Client

from tests.e2e import client_for, upload
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sweep_of_four_trials_two_at_a_time_finds_and_promotes_the_best(live_server, live_base_model, worker_pool):
    from models_app.models import ModelAlias

    worker_pool.ensure({"EVAL_MAX_ROWS": "2", "EVAL_MAX_NEW_TOKENS": "2"})  # each trial's evaluation kept short
    client, user = client_for(live_server)
    headers = {"Authorization": f"Bearer {client.api_key}"}
    # 16 steps an epoch: after its first pass the pruned job has 48 steps left in which to hear its cancel
    # (its events, and so the pruning, are written by the reporter's thread, later on a loaded machine)
    train, valid = upload(client, classification_rows(32)), upload(client, classification_rows(4, seed=3), "v.jsonl")
    body = {"model": "tiny-llama", "training_file": train.id, "validation_file": valid.id, "suffix": "swept",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
            "search_space": {"learning_rate_multiplier": {"type": "loguniform", "low": 0.3, "high": 3},
                             "batch_size": {"type": "categorical", "values": [2, 4]}},
            "objective": {"metric": "valid_loss", "direction": "minimize"}, "max_trials": 4, "parallelism": 2}
    created = requests.post(f"{live_server.url}/v1/sweeps", json=body, headers=headers, timeout=60)
    assert created.status_code == 200, created.text
    sweep_id = created.json()["id"]

    deadline, most_unfinished = time.monotonic() + 900, 0
    while time.monotonic() < deadline:
        sweep = requests.get(f"{live_server.url}/v1/sweeps/{sweep_id}", headers=headers, timeout=30).json()
        unfinished = [t for t in sweep["trials"] if t["job_status"] not in ("succeeded", "failed", "cancelled")]
        most_unfinished = max(most_unfinished, len(unfinished))
        if sweep["status"] != "running":
            break
        time.sleep(1)
    assert sweep["status"] == "succeeded", sweep
    assert most_unfinished == 2  # both first trials at once, never a third before one ends
    trials = sweep["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4, trials
    assert len({(t["params"]["learning_rate_multiplier"], t["params"]["batch_size"]) for t in trials}) == 4
    best = min(trials, key=lambda t: t["value"])
    assert sweep["best_trial"]["number"] == best["number"]
    for trial in trials:  # the value is the job's last valid_loss
        events = requests.get(f"{live_server.url}/v1/fine_tuning/jobs/{trial['job_id']}/events?limit=100",
                              headers=headers, timeout=30).json()["data"]
        losses = [e["data"]["valid_loss"] for e in events if e["type"] == "metrics" and "valid_loss" in e["data"]]
        assert losses and losses[0] == trial["value"]  # newest first

    promoted = requests.post(f"{live_server.url}/v1/sweeps/{sweep_id}/promote_best", json={"alias": "production"},
                             headers=headers, timeout=30)
    assert promoted.status_code == 200, promoted.text
    alias = ModelAlias.objects.get(owner=user, alias="production")
    assert alias.model_id == best["fine_tuned_model"] and alias.model.job_id == best["job_id"]

    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/sweeps/{sweep_id}/").content.decode()
    assert page.count('class="trial-point') == 4 and page.count('class="trial-point best"') == 1
    assert "Promote best" in page


def test_a_trial_clearly_worse_at_its_first_validation_pass_is_pruned(live_server, live_base_model, worker_pool):
    """The objective is the accuracy of the evaluation after each trial. Trial 0 (the default learning
    rate) completes and is scored by its evaluation; trial 1, at a hundredth of that rate, trails trial
    0's validation loss at its first pass of four: the sweep cancels its job there, "pruned by sweep"."""
    from models_app.models import Evaluation

    worker_pool.ensure({"EVAL_MAX_ROWS": "2", "EVAL_MAX_NEW_TOKENS": "2"})
    client, user = client_for(live_server)
    headers = {"Authorization": f"Bearer {client.api_key}"}
    # 16 steps an epoch: after its first pass the pruned job has 48 steps left in which to hear its cancel
    # (its events, and so the pruning, are written by the reporter's thread, later on a loaded machine)
    train, valid = upload(client, classification_rows(32)), upload(client, classification_rows(4, seed=3), "v.jsonl")
    body = {"model": "tiny-llama", "training_file": train.id, "validation_file": valid.id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 2}}},
            "search_space": {"learning_rate_multiplier": {"type": "loguniform", "low": 0.005, "high": 2}},
            "initial_points": [{"learning_rate_multiplier": 1}, {"learning_rate_multiplier": 0.01}],
            "objective": {"metric": "accuracy"}, "pruning": {"type": "median", "startup_trials": 1},
            "max_trials": 2, "parallelism": 1}
    created = requests.post(f"{live_server.url}/v1/sweeps", json=body, headers=headers, timeout=60)
    assert created.status_code == 200, created.text
    sweep_id = created.json()["id"]

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        sweep = requests.get(f"{live_server.url}/v1/sweeps/{sweep_id}", headers=headers, timeout=30).json()
        if sweep["status"] != "running":
            break
        time.sleep(1)
    assert sweep["status"] == "succeeded", sweep
    good, bad = sweep["trials"]
    assert good["state"] == "complete" and sweep["best_trial"]["number"] == 0
    evaluation = Evaluation.objects.get(model__job_id=good["job_id"], kind=Evaluation.Kind.AUTO)
    assert good["value"] == evaluation.metrics["tuned"]["accuracy"]
    assert bad["state"] == "pruned" and bad["job_status"] == "cancelled" and bad["value"] is None, bad
    assert bad["note"].startswith("pruned by sweep: its best valid_loss") and "validation pass 1" in bad["note"]
    events = requests.get(f"{live_server.url}/v1/fine_tuning/jobs/{bad['job_id']}/events?limit=100",
                          headers=headers, timeout=30).json()["data"]
    assert any(e["message"].startswith(f"Job cancelled: pruned by sweep {sweep_id}") for e in events)
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert max(steps) < 64  # stopped early: 4 epochs of 16 steps were asked for

    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/sweeps/{sweep_id}/").content.decode()
    assert 'class="trial-pruned"' in page and "pruned by sweep" in page
