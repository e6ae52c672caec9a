"""job_run in-process (no broker): base models from a local path or a hub id."""

import json

import pytest

from jobs_app.models import FineTuneJob
from jobs_app.services import job_create, job_run, job_validate
from models_app.base_models.models import BaseModel
from tests.factories import make_dataset, make_job, make_user
from workers.tiny_model import PARAMETERS

pytestmark = pytest.mark.django_db(transaction=True)  # job_run writes events from a second thread


def _queued_job(model_name: str) -> FineTuneJob:
    user = make_user()
    job = job_create(owner=user, training_file=make_dataset(user).id, model=model_name,
                     hyperparameters={"n_epochs": 1})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    return job


def test_base_model_from_a_local_path_trains(tiny_model_path):
    BaseModel.objects.create(name="local-tiny", source=str(tiny_model_path), parameters=PARAMETERS)
    job = _queued_job("local-tiny")
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    assert job.attempt == 1 and job.result_model.base_model.name == "local-tiny"
    assert list(job.checkpoints.values_list("step", flat=True)) == [4]


def test_job_past_the_stream_threshold_trains_streamed_with_the_same_steps(base_model, settings):
    settings.TRAIN_STREAM_ABOVE_BYTES = 0  # every file is "large"
    job = _queued_job(base_model.name)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    assert job.events.filter(message__contains=f"streaming its {job.dataset.row_count} rows").exists()
    assert list(job.checkpoints.values_list("step", flat=True)) == [4]  # as in memory: one epoch, 4 steps


def test_small_file_loads_into_memory(base_model, tmp_path):
    from jobs_app.services import train_config

    job = _queued_job(base_model.name)
    assert job.dataset.byte_size < 2**20 and train_config(job, tmp_path).stream_rows == 0


def test_hub_model_that_cannot_be_loaded_fails_before_training():
    BaseModel.objects.create(name="acme/not-downloaded", source="acme/not-downloaded")
    job = _queued_job("acme/not-downloaded")
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED
    assert job.error["code"] == "model_load_failed"
    assert "acme/not-downloaded" in job.error["message"] and "HF_HUB_OFFLINE=1" in job.error["message"]
    assert not job.events.filter(type="metrics").exists()


def test_run_of_cancelled_job_does_nothing(base_model):
    job = _queued_job("tiny-llama")
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED and job.attempt == 0


def test_validation_file_gives_eval_loss_events_and_final_metrics(base_model):
    from workers.sample_data import classification_rows

    user = make_user()
    train = make_dataset(user)
    valid = make_dataset(user, rows=classification_rows(8, seed=5), name="valid.jsonl")
    job = job_create(owner=user, training_file=train.id, validation_file=valid.id, model="tiny-llama",
                     hyperparameters={"n_epochs": 2, "eval_steps": 2})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    evals = [e.data for e in job.events.filter(type="metrics") if "valid_loss" in e.data]
    assert [e["step"] for e in evals] == [2, 4, 6, 8]
    assert all(e["valid_loss"] > 0 for e in evals)
    # OpenAI's names next to ours: the validation pass reads the whole file (full_valid_*)
    assert all(e["full_valid_loss"] == e["valid_loss"] for e in evals)
    assert all(0 <= e["valid_mean_token_accuracy"] == e["full_valid_mean_token_accuracy"] <= 1 for e in evals)
    trains = [e.data for e in job.events.filter(type="metrics") if "train_loss" in e.data]
    assert all(e["train_mean_token_accuracy"] == e["mean_token_accuracy"] for e in trains)
    header, *rows = job.result_file.file.read().decode().splitlines()
    assert header.startswith("step,train_loss,valid_loss,train_mean_token_accuracy,valid_mean_token_accuracy")
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 9))
    assert job.metrics["tokens_per_second"] > 0 and job.metrics["peak_memory_bytes"] > 2**20
    assert job.metrics["wall_seconds"] > 0 and job.trained_tokens > 0


def test_dpo_job_on_preference_pairs_trains_an_adapter(base_model):
    import json

    from datasets_app.services import dataset_upload
    from tests.factories import make_upload

    user = make_user()
    pairs = [{"prompt": f"Classify: The team won match {i}.", "chosen": " sports", "rejected": " food"}
             for i in range(16)]
    content = "".join(json.dumps(p) + "\n" for p in pairs).encode()
    dataset = dataset_upload(owner=user, upload=make_upload(content, "pairs.jsonl"))
    assert dataset.format == "preference"
    job = job_create(owner=user, training_file=dataset.id, model="tiny-llama", objective="dpo",
                     hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate": 3e-3, "beta": 0.2})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    margins = [e.data["rewards/margins"] for e in job.events.filter(type="metrics") if "rewards/margins" in e.data]
    assert len(margins) == 8 and margins[-1] > margins[0]
    assert job.result_model.artifact_files


def test_reinforcement_job_grades_samples_and_every_metric_event_carries_the_reward(base_model):
    user = make_user()
    rows = [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}], "answer": "sports"}
            for i in range(4)]
    grader = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
              "evaluation_metric": "fuzzy_match"}
    job = job_create(owner=user, training_file=make_dataset(user, rows=rows).id, model="tiny-llama",
                     objective="reinforcement", grader=grader,
                     hyperparameters={"n_epochs": 1, "batch_size": 2, "num_generations": 2,
                                      "max_completion_length": 8})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    steps = [e.data for e in job.events.filter(type="metrics")]
    assert [s["step"] for s in steps] == [1, 2] and all(0 <= s["reward"] <= 1 for s in steps)


def test_reinforcement_job_is_rewarded_by_the_owners_tuned_judge_model(base_model, judge_adapter):
    from models_app.services import fine_tuned_model_create

    user = make_user()
    judge = fine_tuned_model_create(job=make_job(user), adapter_dir=judge_adapter)  # it answers "7" to anything
    rows = [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}]} for i in range(4)]
    grader = {"type": "score_model", "name": "judge", "model": f"{judge.name}@v{judge.version}", "range": [0, 10],
              "input": [{"role": "user", "content": "Score this answer from 0 to 10: {{sample.output_text}}"}]}
    job = job_create(owner=user, training_file=make_dataset(user, rows=rows).id, model="tiny-llama",
                     objective="reinforcement", grader=grader,
                     hyperparameters={"n_epochs": 1, "batch_size": 2, "num_generations": 2,
                                      "max_completion_length": 4})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    steps = [e.data for e in job.events.filter(type="metrics")]
    assert [s["step"] for s in steps] == [1, 2] and all(s["rewards/judge/mean"] == 7.0 for s in steps), steps


def test_rlaif_job_stores_the_judged_pairs_as_a_version_of_its_prompts_then_trains_on_them(base_model, monkeypatch):
    from jobs_app import tasks
    from models_app.models import FineTunedModel
    from models_app.selectors import model_lineage
    from tests.api import api_client

    for task in (tasks.job_validate, tasks.job_run):  # run here, step by step: nothing reaches a live worker
        monkeypatch.setattr(task, "delay", lambda *args, **kwargs: None)

    user = make_user()
    rows = [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}]} for i in range(6)]
    prompts = make_dataset(user, rows=rows, name="prompts.jsonl")
    # a continuous score: the answers of a prompt (almost) never tie
    grader = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}", "reference": "the end",
              "evaluation_metric": "fuzzy_match"}
    job = job_create(owner=user, training_file=prompts.id, model="tiny-llama", objective="rlaif", grader=grader,
                     hyperparameters={"n_epochs": 1, "batch_size": 2, "num_generations": 3,
                                      "max_completion_length": 4})
    job_validate(job_id=job.id)  # checked and estimated as any job (the estimate samples and judges a few rows)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.QUEUED, job.error
    assert job.estimate["basis"] == "calibration" and job.estimate["seconds"] > 0
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    pairs = job.preference_dataset
    assert pairs.parent_id == prompts.id and pairs.owner == user and pairs.status == "ready"
    assert pairs.format == "preference" and pairs.filename == "prompts.v2.jsonl"
    [made] = pairs.operations
    assert made["op"] == "rlaif" and made["job"] == job.id and made["policy"] == "tiny-llama"
    assert made["grader"] == grader and made["pairs"] == pairs.row_count > 0 and made["prompts"] == 6
    assert job.events.filter(data__preference_file=pairs.id).exists()
    client = api_client(user)
    content = b"".join(client.get(f"/v1/files/{pairs.id}/content").streaming_content)
    downloaded = [json.loads(line) for line in content.splitlines()]
    assert len(downloaded) == pairs.row_count and {"prompt", "chosen", "rejected"} <= set(downloaded[0])
    assert client.get(f"/v1/fine_tuning/jobs/{job.id}").json()["preference_file"] == pairs.id
    lineage = model_lineage(FineTunedModel.objects.get(job=job))
    assert lineage["preference_dataset"]["id"] == pairs.id
    assert lineage["preference_dataset"]["parents"][0]["id"] == prompts.id == lineage["dataset"]["id"]
    assert api_client(make_user()).get(f"/v1/files/{pairs.id}/content").status_code == 404
