"""The job state machine and the services around it."""

import pytest

from finetune_site.errors import Conflict
from jobs_app import services
from jobs_app.models import ALLOWED_TRANSITIONS, FineTuneJob, JobEvent, Worker
from jobs_app.services import (
    JobControl,
    job_cancel,
    job_event_add,
    job_pause,
    job_transition,
    job_validate,
    jobs_release_for_shutdown,
)
from tests.e2e import wait_for
from tests.factories import make_dataset, make_job, make_user
from workers.config import Stop

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


@pytest.mark.parametrize("start", [s.value for s in Status])
@pytest.mark.parametrize("to", [s.value for s in Status])
def test_transition_follows_the_table(base_model, start, to):
    job = make_job(status=start)
    if to in ALLOWED_TRANSITIONS[start]:
        assert job_transition(job_id=job.id, to=to).status == to
        assert JobEvent.objects.filter(job=job, data__status=to).exists()
    else:
        with pytest.raises(Conflict):
            job_transition(job_id=job.id, to=to)
        job.refresh_from_db()
        assert job.status == start


def test_stale_attempt_cannot_write(base_model):
    job = make_job(status=Status.RUNNING)
    FineTuneJob.objects.filter(pk=job.pk).update(attempt=2)
    with pytest.raises(Conflict, match="stale"):
        job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=1)
    assert FineTuneJob.objects.get(pk=job.pk).status == Status.RUNNING


def test_cancel_queued_job_is_immediate(base_model):
    job = job_cancel(job=make_job(status=Status.QUEUED))
    assert job.status == Status.CANCELLED and job.finished_at is not None


def test_cancel_finished_job_is_refused(base_model):
    with pytest.raises(Conflict, match="already succeeded"):
        job_cancel(job=make_job(status=Status.SUCCEEDED))


def test_cancel_of_cancelled_job_says_it_has_been_cancelled(base_model):
    with pytest.raises(Conflict, match="has already been cancelled; only unfinished"):
        job_cancel(job=make_job(status=Status.CANCELLED))


def test_events_are_numbered_per_job(base_model):
    first, second = make_job(), make_job()
    job_event_add(job_id=first.id, message="a")
    job_event_add(job_id=second.id, message="b")
    job_event_add(job_id=first.id, message="c")
    assert list(first.events.values_list("seq", "message")) == [(1, f"Created fine-tuning job: {first.id}"),
                                                               (2, "a"), (3, "c")]
    assert list(second.events.values_list("seq", flat=True)) == [1, 2]


def test_validation_fails_when_validation_file_has_other_format(base_model, django_capture_on_commit_callbacks):
    user = make_user()
    train = make_dataset(user)
    other = make_dataset(user, rows=[{"prompt": "a", "completion": "b"}])
    job = make_job(user, dataset=train)
    FineTuneJob.objects.filter(pk=job.pk).update(validation_dataset=other)
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.error["code"] == "invalid_training_file"
    assert "prompt_completion" in job.error["message"]


def test_validation_queues_a_good_job_for_training(base_model, django_capture_on_commit_callbacks):
    job = make_job()
    with django_capture_on_commit_callbacks() as callbacks:
        job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.QUEUED and len(callbacks) >= 1


def test_validation_measures_a_sharded_job_in_one_process(base_model, tiny_model_path):
    job = make_job(hyperparameters={"n_epochs": 1, "batch_size": 4, "devices": 2, "sharding": "fsdp"})
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.estimate["basis"] == "calibration" and job.estimate["seconds"] > 0


def test_validation_estimates_tokens_steps_time_and_memory(base_model, tiny_model_path):
    job = make_job(hyperparameters={"n_epochs": 3, "batch_size": 4})
    job_validate(job_id=job.id)
    job.refresh_from_db()
    estimate = job.estimate
    assert job.status == Status.QUEUED and estimate["basis"] == "calibration"
    assert estimate["steps"] == 12  # 16 rows / 4 per step * 3 epochs
    assert estimate["tokens"] == 3 * estimate["tokens_per_epoch"] > 0
    assert 0 < estimate["trainable_tokens_per_epoch"] < estimate["tokens_per_epoch"]
    assert estimate["seconds"] > 0 and estimate["peak_memory_bytes"] > 0
    # the whole job, part by part, each measured on the worker (a few steps, a save, loading)
    parts = estimate["parts"]
    assert {"setup", "training", "checkpoints", "finishing"} <= set(parts) and "evaluation" not in parts
    assert parts["setup"] > 0 and parts["training"] > 0 and estimate["saves"] == 3
    assert estimate["seconds"] == pytest.approx(sum(parts.values()), abs=0.15)
    # on CPU workers the memory is the formula's for the job's options (max_length as resolved from the data)
    assert estimate["memory_basis"] == "formula"
    assert estimate["peak_memory_bytes"] == _formula(base_model, job.hyperparameters)
    logged = job.events.get(data__status="queued").message
    assert "Estimate: " in logged and "(from the CPU memory formula)" in logged


def test_estimate_uses_past_runs_of_the_same_model_and_method(base_model, tiny_model_path):
    done = make_job(status=Status.SUCCEEDED)
    FineTuneJob.objects.filter(pk=done.pk).update(metrics={
        "tokens_per_second": 800.0, "step_tokens_per_second": 1000.0, "peak_memory_bytes": 5, "setup_seconds": 2.0,
        "saves": 3, "save_seconds": 0.6, "finishing_seconds": 1.5})
    job = make_job(hyperparameters={"n_epochs": 3})
    job_validate(job_id=job.id)
    job.refresh_from_db()
    estimate = job.estimate
    assert estimate["basis"] == "past_runs"
    # its memory is not this job's: the past run's max_length was 1024, this one's resolved to 64
    assert estimate["memory_basis"] == "formula" and estimate["peak_memory_bytes"] != 5
    assert estimate["parts"] == {"setup": 2.0, "training": round(estimate["tokens"] / 1000.0, 1), "validation": 0.0,
                                 "checkpoints": 0.6, "finishing": 1.5}  # a checkpoint per epoch, 0.2 s each
    assert estimate["seconds"] == pytest.approx(sum(estimate["parts"].values()))


def test_base_model_that_cannot_load_fails_at_validation(base_model):
    from models_app.base_models.models import BaseModel

    BaseModel.objects.create(name="acme/missing", source="acme/missing")
    user = make_user()
    job = make_job(user, dataset=make_dataset(user))
    FineTuneJob.objects.filter(pk=job.pk).update(base_model=BaseModel.objects.get(name="acme/missing"))
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.error["code"] == "model_load_failed"
    assert "acme/missing" in job.error["message"]


def test_auto_max_length_is_resolved_from_the_longest_row(base_model, tiny_model_path):
    job = make_job()
    assert job.hyperparameters["max_length"] == 1024 and "max_length" in job.hyperparameters["auto_resolved"]
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.hyperparameters["max_length"] == 64  # the classification rows are ~25 tokens long
    assert job.events.filter(message__startswith="max_length resolved from the data to 64").exists()


def test_given_max_length_is_kept(base_model, tiny_model_path):
    job = make_job(hyperparameters={"max_length": 512})
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.hyperparameters["max_length"] == 512 and "max_length" not in job.hyperparameters["auto_resolved"]


def test_auto_gradient_checkpointing_turns_on_only_when_past_peaks_exceed_the_gpu(base_model):
    first = make_job()
    assert first.hyperparameters["gradient_checkpointing"] is False  # CPU workers only, no history
    assert first.hyperparameters["padding_free"] is True and first.hyperparameters["gradient_accumulation_steps"] == 1
    FineTuneJob.objects.filter(pk=first.pk).update(status=Status.SUCCEEDED, metrics={"peak_memory_bytes": 20 * 2**30})
    Worker.objects.create(name="gpu-1", devices={"kind": "cuda", "count": 1, "memory_bytes": 16 * 2**30})
    job = make_job()
    assert job.hyperparameters["gradient_checkpointing"] is True
    assert "gradient_checkpointing" in job.hyperparameters["auto_resolved"]
    given = make_job(hyperparameters={"gradient_checkpointing": False})
    assert given.hyperparameters["gradient_checkpointing"] is False
    Worker.objects.filter(name="gpu-1").update(devices={"kind": "cuda", "count": 1, "memory_bytes": 80 * 2**30})
    assert make_job().hyperparameters["gradient_checkpointing"] is False


# --- the wizard's estimate for a job not created yet ---

HP = {"n_epochs": 3, "batch_size": 4, "max_length": 64, "adapter": "lora"}


def test_draft_estimate_without_history_says_time_unknown_and_reads_the_counts_being_made(base_model):
    from datasets_app.models import TokenStats
    from jobs_app.services import job_estimate_draft

    dataset = make_dataset()  # turning ready asked for its token counts
    estimate = job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=HP)
    assert estimate["steps"] == 12 and estimate["steps_per_epoch"] == 4  # 16 rows / 4 × 3
    assert estimate["seconds"] is None and estimate["basis"] == "none"
    assert estimate["memory_basis"] == "formula" and estimate["peak_memory_bytes"] == _formula(base_model, HP)
    assert estimate["tokens_basis"] == "bytes" and estimate["stats_status"] == "computing"
    assert estimate["tokens"] == estimate["tokens_per_epoch"] * 3 > 0
    assert TokenStats.objects.filter(sha256=dataset.sha256, status="computing").exists()


def test_draft_estimate_uses_token_stats_and_past_runs_of_the_model_and_adapter(base_model):
    from datasets_app.models import TokenStats
    from datasets_app.services.stats import _stats_key
    from jobs_app.services import job_estimate_draft

    dataset = make_dataset()
    totals, targets = [10, 40, 100] * 5 + [20], [2, 30, 50] * 5 + [5]  # 16 rows
    TokenStats.objects.update_or_create(**_stats_key(dataset, base_model, ""), defaults=dict(
        status="ready", rows=16, totals=totals, targets=targets))
    for speed, memory in ((100.0, 2**20), (300.0, 3 * 2**20), (200.0, 2**21)):
        past = make_job(status="succeeded")
        FineTuneJob.objects.filter(pk=past.pk).update(metrics={"tokens_per_second": speed,
                                                              "peak_memory_bytes": memory})
    other = make_job(status="succeeded", hyperparameters={"adapter": "full"})
    FineTuneJob.objects.filter(pk=other.pk).update(metrics={"tokens_per_second": 1.0, "peak_memory_bytes": 2**30})

    estimate = job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=HP)
    kept = (10 + 40 + 64) * 5 + 20  # rows truncated at max_length 64
    assert estimate["tokens_basis"] == "tokenizer" and estimate["tokens"] == kept * 3
    # the 100-token rows keep 64: 50 prompt tokens leave 14 of the 50 target tokens
    assert estimate["trainable_tokens"] == ((2 + 30 + 14) * 5 + 5) * 3
    assert estimate["basis"] == "past_runs" and estimate["tokens_per_second"] == 200.0  # the median
    assert estimate["parts"]["training"] == round(kept * 3 / 200.0, 1)
    assert estimate["seconds"] == pytest.approx(sum(estimate["parts"].values()))
    # with a GPU worker the memory is the largest peak of those runs (on CPU: the formula, their options differ)
    Worker.objects.create(name="gpu-1", devices={"kind": "cuda", "count": 1, "memory_bytes": 80 * 2**30})
    estimate = job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=HP)
    assert estimate["memory_basis"] == "past_runs" and estimate["peak_memory_bytes"] == 3 * 2**20


def test_draft_estimate_of_reinforcement_paces_by_the_steps_of_past_reinforcement_runs(base_model):
    """Sampling sets a reinforcement step's time: past reinforcement runs give seconds per sampled answer,
    scaled to this job's answers per step; supervised runs of the same model say nothing about it."""
    from jobs_app.services import job_estimate_draft

    dataset = make_dataset()  # 16 rows
    past = make_job(status="succeeded")
    FineTuneJob.objects.filter(pk=past.pk).update(
        objective="reinforcement", hyperparameters={**past.hyperparameters, "batch_size": 2, "num_generations": 4},
        metrics={"step_tokens_per_second": 50.0, "step_seconds": 4.0, "peak_memory_bytes": 7})  # 0.5 s an answer
    supervised = make_job(status="succeeded")
    FineTuneJob.objects.filter(pk=supervised.pk).update(metrics={"step_tokens_per_second": 9000.0,
                                                                "step_seconds": 0.01, "peak_memory_bytes": 1})
    hp = {"n_epochs": 1, "batch_size": 4, "num_generations": 2, "max_completion_length": 8, "adapter": "lora"}
    estimate = job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=hp,
                                  objective="reinforcement")
    assert estimate["steps"] == 4 and estimate["step_seconds"] == 4.0  # 8 answers a step at 0.5 s
    assert estimate["parts"]["training"] == 16.0 and estimate["peak_memory_bytes"] == 7


# --- the memory estimate on CPU workers ---

def _formula(base_model, hp: dict) -> int:
    """What ``workers.estimate.cpu_memory_need`` gives for the tiny model with the options ``hp``."""
    from workers.estimate import Shape, cpu_memory_need

    return cpu_memory_need(parameters=base_model.parameters, shape=Shape(**base_model.shape), adapter=hp["adapter"],
                           batch_size=hp["batch_size"], max_length=hp["max_length"],
                           checkpointing=bool(hp.get("gradient_checkpointing")), lora_r=hp.get("lora_r") or 16)


def test_cpu_memory_estimate_is_the_formula_and_follows_the_options_that_size_it(base_model):
    from jobs_app.services import job_estimate_draft

    dataset = make_dataset()

    def memory(**changes) -> int:
        hp = {**HP, "gradient_checkpointing": False, **changes}
        estimate = job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=hp)
        assert estimate["memory_basis"] == "formula" and estimate["peak_memory_bytes"] == _formula(base_model, hp)
        return estimate["peak_memory_bytes"]

    lora = memory()
    assert memory(batch_size=8) > lora and memory(max_length=128) > lora
    assert memory(adapter="full") != lora and memory(gradient_checkpointing=True) != lora


def test_cpu_memory_estimate_reads_a_past_run_only_with_the_same_memory_options(base_model):
    from jobs_app.services import job_estimate_draft

    dataset = make_dataset()
    past = make_job(status="succeeded")
    FineTuneJob.objects.filter(pk=past.pk).update(metrics={"tokens_per_second": 50.0, "peak_memory_bytes": 7 * 2**20})
    same, larger = past.hyperparameters, {**past.hyperparameters, "batch_size": past.hyperparameters["batch_size"] * 2}

    def estimate(hp: dict) -> dict:
        return job_estimate_draft(owner=dataset.owner, dataset=dataset, base_model=base_model, hyperparameters=hp)

    assert (estimate(same)["memory_basis"], estimate(same)["peak_memory_bytes"]) == ("past_runs", 7 * 2**20)
    assert (estimate(larger)["memory_basis"], estimate(larger)["peak_memory_bytes"]) == \
        ("formula", _formula(base_model, larger))
    Worker.objects.create(name="gpu-1", devices={"kind": "cuda", "count": 1, "memory_bytes": 80 * 2**30})
    assert (estimate(larger)["memory_basis"], estimate(larger)["peak_memory_bytes"]) == ("past_runs", 7 * 2**20)


# --- the template: checked before any compute ---

def _model_without_chat_template(tiny_model_path, tmp_path):
    """A copy of the tiny model whose tokenizer has no chat template, registered as a base model."""
    import shutil

    from transformers import AutoTokenizer

    from models_app.base_models.models import BaseModel
    from workers.tiny_model import PARAMETERS

    path = tmp_path / "plain"
    shutil.copytree(tiny_model_path, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = None
    (path / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).chat_template is None
    return BaseModel.objects.create(name="plain", source=str(path), parameters=PARAMETERS, context_length=2048)


def test_chat_data_on_a_model_without_chat_template_fails_before_compute(base_model, tiny_model_path, tmp_path):
    from jobs_app.services import job_create

    plain = _model_without_chat_template(tiny_model_path, tmp_path)
    user = make_user()
    job = job_create(owner=user, training_file=make_dataset(user).id, model=plain.name)
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.FAILED and job.error["code"] == "invalid_template"
    assert "the model has no chat template" in job.error["message"] and "row 1" in job.error["message"]
    assert job.estimate == {}  # nothing was measured or trained


def test_a_named_template_makes_that_model_trainable(base_model, tiny_model_path, tmp_path,
                                                     django_capture_on_commit_callbacks):
    from jobs_app.services import job_create

    plain = _model_without_chat_template(tiny_model_path, tmp_path)
    user = make_user()
    job = job_create(owner=user, training_file=make_dataset(user).id, model=plain.name,
                     hyperparameters={"template": "chatml"})
    with django_capture_on_commit_callbacks():
        job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == Status.QUEUED and job.hyperparameters["template"] == "chatml"
    assert job.estimate["trainable_tokens_per_epoch"] > 0


def test_zero_trainable_check_uses_the_jobs_template(base_model, tiny_model_path):
    from jobs_app.services import job_create

    user = make_user()
    long_prompt = {"messages": [{"role": "user", "content": "Classify: " + "the band played " * 8},
                                {"role": "assistant", "content": "music"}]}
    dataset = make_dataset(user, rows=[long_prompt] * 4)
    # the same rows fit in 64 tokens with the model's own template, not with Llama 3's longer headers
    fits = job_create(owner=user, training_file=dataset.id, model="tiny-llama", hyperparameters={"max_length": 64})
    cut = job_create(owner=user, training_file=dataset.id, model="tiny-llama",
                     hyperparameters={"max_length": 64, "template": "llama3"})
    for job in (fits, cut):
        job_validate(job_id=job.id)
        job.refresh_from_db()
    assert fits.status == Status.QUEUED
    assert cut.status == Status.FAILED
    assert "no trainable tokens after truncation to max_length 64" in cut.error["message"]


def _running(job: FineTuneJob, *, worker: str = "") -> FineTuneJob:
    FineTuneJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, attempt=1, lease_owner=worker)
    job.refresh_from_db()
    return job


@pytest.mark.django_db(transaction=True)
def test_control_reads_the_row_once_then_only_when_the_job_changes(live_base_model, django_assert_num_queries):
    job = _running(make_job())
    with JobControl(job) as control:
        assert control() == Stop.NO  # the first step reads the row
        with django_assert_num_queries(0):  # steps go by without a query while nothing changes
            assert all(control() == Stop.NO for _ in range(50))


@pytest.mark.django_db(transaction=True)
def test_control_hears_a_cancel_through_the_jobs_group(live_base_model, monkeypatch):
    monkeypatch.setattr(services.engine, "CONTROL_POLL_SECONDS", 3600)  # only the published change can tell it
    job = _running(make_job())
    with JobControl(job) as control:
        assert control() == Stop.NO
        job_cancel(job=job)
        wait_for(lambda: control() == Stop.DISCARD, timeout=5, what="the cancel to reach the running step")


@pytest.mark.django_db(transaction=True)
def test_control_hears_a_pause_request(live_base_model, monkeypatch):
    monkeypatch.setattr(services.engine, "CONTROL_POLL_SECONDS", 3600)
    job = _running(make_job())
    with JobControl(job) as control:
        assert control() == Stop.NO
        job_pause(job=job)
        wait_for(lambda: control() == Stop.CHECKPOINT, timeout=5, what="the pause to reach the running step")


@pytest.mark.django_db(transaction=True)
def test_control_finds_a_shutdown_request_that_sends_no_message(live_base_model, monkeypatch):
    monkeypatch.setattr(services.engine, "CONTROL_POLL_SECONDS", 0.2)
    job = _running(make_job(), worker="w1")
    with JobControl(job) as control:
        assert control() == Stop.NO
        assert jobs_release_for_shutdown(worker="w1") == 1
        wait_for(lambda: control() == Stop.CHECKPOINT, timeout=5, what="the periodic read")


def test_control_without_a_channel_layer_reads_the_row_every_step(base_model, settings):
    settings.CHANNEL_LAYERS = {}
    job = _running(make_job())
    with JobControl(job) as control:
        assert control() == Stop.NO
        FineTuneJob.objects.filter(pk=job.pk).update(status=Status.CANCELLED)
        assert control() == Stop.DISCARD


def test_checkpoint_fetch_for_evaluation_leaves_the_optimizer_state_out(base_model, tmp_path):
    import json

    from finetune_site.files import storage_put_dir
    from jobs_app.models import Checkpoint
    from jobs_app.services import checkpoint_fetch

    job = make_job()
    source = tmp_path / "source"
    source.mkdir()
    for name in ("adapter_model.safetensors", "optimizer.pt", "rng_state.pth"):
        (source / name).write_bytes(b"x")
    (source / "manifest.json").write_text(json.dumps({"files": ["adapter_model.safetensors", "optimizer.pt",
                                                                 "rng_state.pth"]}))
    storage_put_dir(source, f"jobs/{job.id}/checkpoints/step-3", last="manifest.json")
    checkpoint = Checkpoint.objects.create(job=job, step=3, storage_path=f"jobs/{job.id}/checkpoints/step-3")
    weights = checkpoint_fetch(checkpoint=checkpoint, target=tmp_path / "w", weights_only=True)
    assert sorted(p.name for p in weights.iterdir()) == ["adapter_model.safetensors", "manifest.json"]
    whole = checkpoint_fetch(checkpoint=checkpoint, target=tmp_path / "all")
    assert len(list(whole.iterdir())) == 4


def test_result_file_holds_one_csv_row_per_step_owned_by_the_jobs_owner(base_model):
    from tests.factories import make_metric

    job = make_job()
    for step in (1, 2):
        make_metric(job, step, total_steps=2, mean_token_accuracy=0.5, train_mean_token_accuracy=0.5)
    make_metric(job, 2, total_steps=2, valid_loss=0.7, full_valid_loss=0.7)  # the validation pass at step 2
    result = services.job_result_file_create(job)
    assert (result.owner, result.purpose, result.status, result.row_count) == (job.owner, "fine-tune-results",
                                                                                 "ready", 2)
    header, first, second = result.file.read().decode().splitlines()
    assert header == ("step,train_loss,valid_loss,train_mean_token_accuracy,valid_mean_token_accuracy,"
                      "full_valid_loss,full_valid_mean_token_accuracy,learning_rate,tokens,reward")
    assert first == "1,2.0,,0.5,,,,0.001,100," and second == "2,1.0,0.7,0.5,,0.7,,0.001,200,"


@pytest.mark.django_db(transaction=True)  # the reporter writes from its own thread (its own connection)
def test_a_checkpoint_over_two_nodes_counts_only_once_each_node_stored_its_part(live_base_model, tmp_path):
    from jobs_app.models import Checkpoint
    from jobs_app.services import JobReporter, checkpoint_fetch
    from workers.events import ArtifactSaved

    job = make_job(hyperparameters={"nodes": 2, "devices": 1, "adapter": "full", "sharding": "fsdp"})
    FineTuneJob.objects.filter(pk=job.pk).update(status=Status.RUNNING, attempt=1, gang={"attempt": 1})
    job.refresh_from_db()
    parts = {0: ("pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/.metadata", "trainer_state.json"),
             1: ("pytorch_model_fsdp_0/__1_0.distcp", "rng_state_1.pth")}

    def node_saves(node: int, step: int, **metrics) -> None:
        directory = tmp_path / f"node{node}" / f"checkpoint-{step}"
        for name in parts[node]:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(f"node {node}")
        reporter = JobReporter(job, node=node)
        reporter(ArtifactSaved(kind="checkpoint", path=str(directory), step=step, metrics=metrics))
        reporter.close()

    node_saves(1, 3)
    assert not Checkpoint.objects.filter(job=job).exists()  # half of it: nothing to resume from
    node_saves(0, 3, train_loss=1.5)
    checkpoint = Checkpoint.objects.get(job=job)
    assert (checkpoint.step, checkpoint.metrics) == (3, {"train_loss": 1.5})
    fetched = checkpoint_fetch(checkpoint=checkpoint, target=tmp_path / "resume")  # what each node resumes from
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()) == sorted(
        [*parts[0], *parts[1], "manifest.json"])
    assert job.events.filter(message="Saved checkpoint at step 3").count() == 1
    assert not FineTuneJob.objects.get(pk=job.pk).gang["parts"]

    FineTuneJob.objects.filter(pk=job.pk).update(attempt=2)  # another attempt owns the job now
    node_saves(0, 6)
    node_saves(1, 6)
    assert list(Checkpoint.objects.filter(job=job).values_list("step", flat=True)) == [3]
