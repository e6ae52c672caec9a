"""Pipelines on the real worker: clean → dedup (+ split) → train → evaluate with a gate → export, each step a
normal object with its own page; a changed export step re-runs only the export; a lost worker is a transient
failure, retried with backoff until the pipeline succeeds."""

import time

import pytest
import requests
from django.test import Client

from datasets_app.models import Dataset
from jobs_app.models import FineTuneJob
from jobs_app.services import jobs_reap
from models_app.models import Export, FineTunedModel
from pipelines_app.models import PipelineStep
from tests.e2e import LEARNABLE, client_for, upload, wait_for
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _call(live_server, key: str, method: str, path: str, body=None) -> dict:
    response = requests.request(method, live_server.url + path, json=body, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


def _run_finished(live_server, key: str, pipeline_id: str, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _call(live_server, key, "GET", f"/v1/pipelines/{pipeline_id}/runs/{run_id}")
        if run["status"] != "running":
            return run
        jobs_reap()  # celery beat's part
        time.sleep(0.5)
    jobs = list(FineTuneJob.objects.values_list("id", "status", "error"))
    raise AssertionError(f"run {run_id} still running after {timeout}s: {run['steps']}; jobs {jobs}")


def _recipe(file_id: str, export_kind: str = "adapter") -> dict:
    return {
        "name": "topics",
        "inputs": {"dataset": file_id},
        "steps": [
            {"id": "clean", "type": "prepare", "dataset": "${inputs.dataset}", "operations": [{"op": "clean"}]},
            {"id": "dedup", "type": "prepare", "dataset": "${steps.clean.dataset}",
             "operations": [{"op": "dedup"}, {"op": "split", "validation_share": 0.25, "seed": 1}]},
            {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${steps.dedup.dataset}",
             "suffix": "pipetopics",
             "method": {"type": "supervised", "supervised": {"hyperparameters": {**LEARNABLE, "n_epochs": 2}}}},
            {"id": "evaluate", "type": "evaluate", "model": "${steps.train.model}",
             "dataset": "${steps.dedup.validation}", "max_rows": 6, "max_new_tokens": 4,
             "gate": {"metric": "eval_loss", "min_improvement": 0.0, "alias": "production"}},
            {"id": "export", "type": "export", "needs": ["evaluate"], "model": "${steps.train.model}",
             "kind": export_kind},
        ],
    }


def test_a_recipe_runs_end_to_end_and_a_changed_export_reruns_only_the_export(live_server, live_base_model,
                                                                               worker):
    client, _ = client_for(live_server)
    rows = classification_rows(16)
    rows[0]["messages"][0]["content"] = "  Classify:   I saw the race near the ball.  "  # clean's whitespace
    source = upload(client, rows + rows[:4])  # four exact copies for dedup
    key = client.api_key

    pipeline = _call(live_server, key, "POST", "/v1/pipelines", _recipe(source.id))
    run = _run_finished(live_server, key, pipeline["id"], pipeline["latest_run"]["id"])
    steps = {s["id"]: s for s in run["steps"]}
    assert run["status"] == "succeeded", steps
    assert all(s["status"] == "succeeded" and not s["reused"] and s["attempts"] == 1 for s in steps.values())

    cleaned = client.files.retrieve(steps["clean"]["outputs"]["dataset"])
    assert cleaned.id != source.id and cleaned.filename.endswith(".v2.jsonl")
    train_part = Dataset.objects.get(pk=steps["dedup"]["outputs"]["dataset"])
    valid_part = Dataset.objects.get(pk=steps["dedup"]["outputs"]["validation"])
    assert train_part.parent_id == valid_part.parent_id == cleaned.id
    assert train_part.row_count + valid_part.row_count == 16  # the four copies dropped
    job = client.fine_tuning.jobs.retrieve(steps["train"]["outputs"]["job"])
    assert job.status == "succeeded" and job.training_file == train_part.id
    assert steps["train"]["outputs"]["model"] == job.fine_tuned_model
    evaluation_id = steps["evaluate"]["outputs"]["evaluation"]
    evaluation = _call(live_server, key, "GET", f"/v1/registry/evaluations/{evaluation_id}")
    assert evaluation["status"] == "succeeded" and evaluation["file"] == valid_part.id
    assert evaluation["model"] == job.fine_tuned_model and evaluation["rows_evaluated"] == valid_part.row_count
    assert "eval_loss" in steps["evaluate"]["outputs"]["gate"]
    assert client.models.retrieve("pipetopics@production").id == job.fine_tuned_model  # the gate promoted it
    export = Export.objects.get(pk=steps["export"]["outputs"]["export"])
    assert export.status == "verified" and export.kind == "adapter" and export.model_id == job.fine_tuned_model

    # each step's object has its own page, and the pipeline page draws them with their status
    browser = Client()
    browser.force_login(FineTunedModel.objects.get(pk=job.fine_tuned_model).owner)
    page = browser.get(f"/pipelines/{pipeline['id']}/")
    assert page.status_code == 200
    html = page.content.decode()
    for step_id in steps:
        assert f'data-step="{step_id}" data-status="succeeded"' in html
    assert f"/jobs/{job.id}/" in html and f"/datasets/{cleaned.id}/" in html

    # only the export changed: a new pipeline reuses the other four steps' objects
    changed = _call(live_server, key, "POST", "/v1/pipelines", _recipe(source.id, export_kind="merged"))
    again = _run_finished(live_server, key, changed["id"], changed["latest_run"]["id"])
    again_steps = {s["id"]: s for s in again["steps"]}
    assert again["status"] == "succeeded", again_steps
    for step_id in ("clean", "dedup", "train", "evaluate"):
        assert again_steps[step_id]["reused"] and again_steps[step_id]["outputs"] == steps[step_id]["outputs"]
    assert not again_steps["export"]["reused"]
    assert again_steps["export"]["outputs"]["export"] != steps["export"]["outputs"]["export"]
    assert Export.objects.get(pk=again_steps["export"]["outputs"]["export"]).kind == "merged"
    assert FineTuneJob.objects.count() == 1

    # the same recipe on the same data again: everything reused, nothing made
    rerun = _call(live_server, key, "POST", f"/v1/pipelines/{pipeline['id']}/runs",
                  {"inputs": {"dataset": source.id}})
    rerun = _run_finished(live_server, key, pipeline["id"], rerun["id"], timeout=30)
    assert rerun["status"] == "succeeded" and all(s["reused"] for s in rerun["steps"])
    assert FineTuneJob.objects.count() == 1 and Export.objects.count() == 2


def test_a_lost_worker_is_retried_with_backoff_and_the_pipeline_succeeds(live_server, live_base_model, worker_pool):
    # one attempt per job: the lost worker fails the job, and the pipeline (not the job) retries it
    worker_pool.ensure({"JOB_MAX_ATTEMPTS": "1", "PIPELINE_RETRY_BASE_SECONDS": "2"})
    client, _ = client_for(live_server)
    source = upload(client, classification_rows(24))
    recipe = {"inputs": {"dataset": source.id}, "steps": [
        {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${inputs.dataset}",
         "method": {"type": "supervised", "supervised": {"hyperparameters": {**LEARNABLE, "n_epochs": 2}}}},
        {"id": "export", "type": "export", "model": "${steps.train.model}", "kind": "adapter"},
    ]}
    pipeline = _call(live_server, client.api_key, "POST", "/v1/pipelines", recipe)

    def training():
        step = PipelineStep.objects.filter(run__pipeline_id=pipeline["id"], step_id="train").first()
        return step and step.object_id and FineTuneJob.objects.filter(pk=step.object_id, status="running").exists()

    wait_for(training, timeout=60, what="the train step's job to run")
    first_job = PipelineStep.objects.get(run__pipeline_id=pipeline["id"], step_id="train").object_id
    worker_pool.kill()
    wait_for(lambda: (jobs_reap() or True) and FineTuneJob.objects.get(pk=first_job).status == "failed",
             timeout=60, interval=0.5, what="the reaper to fail the lost job")
    assert FineTuneJob.objects.get(pk=first_job).error["code"] == "worker_lost"
    worker_pool.ensure({"JOB_MAX_ATTEMPTS": "1", "PIPELINE_RETRY_BASE_SECONDS": "2"})

    wait_for(lambda: PipelineStep.objects.get(run__pipeline_id=pipeline["id"], step_id="train").status
             in ("retrying", "running") and PipelineStep.objects.get(
                 run__pipeline_id=pipeline["id"], step_id="train").attempts >= 1, timeout=30, what="the retry")
    run = _run_finished(live_server, client.api_key, pipeline["id"], pipeline["latest_run"]["id"])
    steps = {s["id"]: s for s in run["steps"]}
    assert run["status"] == "succeeded", steps
    assert steps["train"]["attempts"] == 2 and steps["train"]["outputs"]["job"] != first_job
    second = FineTuneJob.objects.get(pk=steps["train"]["outputs"]["job"])
    assert second.status == "succeeded"
    waited = (second.created_at - FineTuneJob.objects.get(pk=first_job).finished_at).total_seconds()
    assert waited >= 2  # the backoff: 2^0 × the base delay before the job is made again
    assert steps["export"]["status"] == "succeeded"
