"""Advancing a run, step by step, with the step objects' own status writers standing in for the workers:
transient failures are retried with exponential backoff, permanent ones stop the dependants with the reason,
and a run on a new dataset version makes everything again while an unchanged one reuses it."""

import pytest
from django.utils import timezone

from jobs_app.models import FineTuneJob
from jobs_app.services import job_fail
from pipelines_app.models import PipelineRun, PipelineStep
from pipelines_app.services import pipeline_advance, pipeline_create, pipeline_run_create
from tests.factories import make_dataset, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


def _recipe(file_id: str, operations=None) -> dict:
    return {"inputs": {"dataset": file_id}, "steps": [
        {"id": "clean", "type": "prepare", "dataset": "${inputs.dataset}",
         "operations": operations or [{"op": "clean"}]},
        {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${steps.clean.dataset}",
         "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}},
        {"id": "export", "type": "export", "model": "${steps.train.model}", "kind": "adapter"},
    ]}


def _steps(run: PipelineRun) -> dict[str, PipelineStep]:
    return {s.step_id: s for s in PipelineStep.objects.filter(run=run)}


@pytest.fixture
def started(base_model, settings):
    """A run advanced once: clean done at once (a small dataset is prepared inline), train's job made."""
    settings.PIPELINE_RETRY_BASE_SECONDS = 10
    settings.PIPELINE_STEP_MAX_ATTEMPTS = 3
    owner = make_user()
    pipeline = pipeline_create(owner=owner, recipe=_recipe(make_dataset(owner).id))
    run = pipeline.runs.get()
    pipeline_advance(run_id=run.id)
    return run


def test_the_first_advance_prepares_inline_and_starts_the_job(started):
    steps = _steps(started)
    assert steps["clean"].status == "succeeded" and steps["clean"].outputs["dataset"].startswith("file-")
    assert steps["train"].status == "running" and steps["train"].attempts == 1
    job = FineTuneJob.objects.get(pk=steps["train"].object_id)
    assert job.dataset_id == steps["clean"].outputs["dataset"] and job.hyperparameters["n_epochs"] == 1
    assert steps["export"].status == "pending"


def test_a_transient_failure_is_retried_with_exponential_backoff_then_fails(started):
    delays = []
    for attempt in (1, 2, 3):
        step = _steps(started)["train"]
        assert step.attempts == attempt
        job_fail(job_id=step.object_id, code="worker_lost", message="Worker w1 stopped sending heartbeats")
        before = timezone.now()
        pipeline_advance(run_id=started.id)
        step = _steps(started)["train"]
        if attempt < 3:
            assert step.status == "retrying" and "worker_lost" not in step.error and "heartbeats" in step.error
            delays.append(round((step.retry_at - before).total_seconds()))
            pipeline_advance(run_id=started.id)  # too early: nothing is made
            assert _steps(started)["train"].attempts == attempt
            PipelineStep.objects.filter(pk=step.pk).update(retry_at=timezone.now())  # the countdown has passed
            pipeline_advance(run_id=started.id)
    assert delays == [10, 20]  # 2^k × the base delay
    steps = _steps(started)
    assert steps["train"].status == "failed" and FineTuneJob.objects.filter(owner=started.pipeline.owner).count() == 3
    assert steps["export"].status == "skipped" and "'train' failed" in steps["export"].reason
    assert PipelineRun.objects.get(pk=started.id).status == "failed"


def test_a_permanent_failure_skips_the_dependants_with_the_reason(started):
    job_id = _steps(started)["train"].object_id
    job_fail(job_id=job_id, code="training_failed", message="RuntimeError: loss is nan")
    pipeline_advance(run_id=started.id)
    steps = _steps(started)
    assert steps["train"].status == "failed" and steps["train"].attempts == 1
    assert "loss is nan" in steps["train"].error
    assert steps["export"].status == "skipped"
    assert steps["export"].reason == f"step 'train' failed: {job_id}: RuntimeError: loss is nan"
    assert PipelineRun.objects.get(pk=started.id).status == "failed"
    assert FineTuneJob.objects.count() == 1  # not retried


def test_a_prepare_that_leaves_no_rows_fails_and_skips_the_rest(base_model):
    owner = make_user()
    pipeline = pipeline_create(owner=owner, recipe=_recipe(
        make_dataset(owner).id, operations=[{"op": "filter_length", "min_chars": 100000}]))
    run = pipeline.runs.get()
    pipeline_advance(run_id=run.id)
    steps = _steps(run)
    assert steps["clean"].status == "failed" and "no train rows" in steps["clean"].error
    assert steps["train"].status == "skipped" and "'clean' failed" in steps["train"].reason
    assert steps["export"].status == "skipped" and "'train' skipped" in steps["export"].reason
    assert PipelineRun.objects.get(pk=run.id).status == "failed" and not FineTuneJob.objects.exists()


def test_a_new_dataset_version_changes_every_key_and_the_same_one_none(started):
    pipeline = started.pipeline
    same = pipeline_run_create(pipeline=pipeline)
    other = pipeline_run_create(pipeline=pipeline, inputs={"dataset": make_dataset(
        pipeline.owner, rows=classification_rows(16, seed=3)).id})
    first, again, new = _steps(started), _steps(same), _steps(other)
    assert all(first[s].key == again[s].key for s in first)
    assert all(first[s].key != new[s].key for s in first)
    pipeline_advance(run_id=same.id)
    again = _steps(same)
    assert again["clean"].status == "succeeded" and again["clean"].reused_from_id == first["clean"].pk
    assert again["clean"].outputs == first["clean"].outputs
    assert again["train"].status == "running"  # the first run's train has not succeeded: nothing to reuse
    assert again["train"].object_id != first["train"].object_id


def test_a_step_object_ending_queues_the_advance_of_its_run(started, django_capture_on_commit_callbacks,
                                                             monkeypatch):
    from pipelines_app import tasks

    queued = []
    monkeypatch.setattr(tasks.pipeline_advance, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        job_fail(job_id=_steps(started)["train"].object_id, code="training_failed", message="boom")
    assert queued == [started.id]


def test_independent_steps_start_together(base_model):
    owner = make_user()
    recipe = _recipe(make_dataset(owner).id)
    twin = {**recipe["steps"][1], "id": "train_more",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}
    recipe["steps"].insert(2, twin)
    run = pipeline_create(owner=owner, recipe=recipe).runs.get()
    pipeline_advance(run_id=run.id)
    steps = _steps(run)
    assert steps["train"].status == steps["train_more"].status == "running"
    assert FineTuneJob.objects.filter(owner=owner).count() == 2
    assert steps["export"].status == "pending"
