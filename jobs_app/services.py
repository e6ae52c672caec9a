"""Writes for fine-tuning jobs. Only ``job_transition`` writes ``FineTuneJob.status``."""

import json
import logging
import math
import queue
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from datasets_app.models import Dataset
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch, storage_put_dir
from jobs_app.broadcast import job_listen, job_publish
from jobs_app.hyperparameters import hyperparameters_resolve
from jobs_app.models import ALLOWED_TRANSITIONS, Checkpoint, FineTuneJob, JobEvent, Worker
from models_app.models import BaseModel
from models_app.services import (
    base_model_local_path,
    evaluation_for_job,
    fine_tuned_model_create,
    promotion_gate_check,
)
from workers.events import ArtifactSaved, LogLine, Metric

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
MANIFEST = "manifest.json"
UNKNOWN_ROWS = 10_000


def job_create(*, owner, training_file: str, model: str, validation_file: str | None = None,
               hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
               method: str = FineTuneJob.Method.SUPERVISED, promotion_gate: dict | None = None,
               evaluate_checkpoints: bool = False) -> FineTuneJob:
    """Check the request, resolve every "auto" hyperparameter and queue file validation.

    With a validation file the tuned model is evaluated against its base when the job ends;
    ``promotion_gate`` then decides whether the new version gets an alias, and
    ``evaluate_checkpoints`` scores every checkpoint too and marks the best.
    """
    dataset = _dataset_for(owner, training_file, "training_file")
    validation = _dataset_for(owner, validation_file, "validation_file") if validation_file else None
    gate = promotion_gate_check(promotion_gate, has_validation=validation is not None)
    if evaluate_checkpoints and validation is None:
        raise InvalidRequest("evaluate_checkpoints scores checkpoints on the validation file: give validation_file",
                             param="evaluate_checkpoints")
    base = _base_model_for(model)
    _suffix_check(suffix)
    for dataset_, param in ((dataset, "training_file"), (validation, "validation_file")):
        problem = _format_problem(dataset_, method) if dataset_ else ""
        if problem:
            raise InvalidRequest(problem, param=param, code="invalid_file_format")
    # A file still being checked has no row count yet: size the batch as for a large file.
    rows = dataset.row_count if dataset.status == Dataset.Status.READY else UNKNOWN_ROWS
    resolved = hyperparameters_resolve(hyperparameters, parameters=base.parameters,
                                       rows=rows, context_length=base.context_length)
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            owner=owner, dataset=dataset, validation_dataset=validation, base_model=base,
            hyperparameters=resolved, suffix=suffix or "", seed=42 if seed is None else seed,
            max_attempts=settings.JOB_MAX_ATTEMPTS, method=method, promotion_gate=gate,
            evaluate_checkpoints=evaluate_checkpoints,
        )
        job_event_add(job_id=job.id, message=f"Created fine-tuning job: {job.id}")
        transaction.on_commit(lambda: _job_validate_task().delay(job.id))
    return job


def _format_problem(dataset: Dataset, method: str) -> str:
    """Why a ready dataset cannot train with ``method`` ("" when it can, or is not checked yet)."""
    if dataset.status != Dataset.Status.READY:
        return ""
    if method == FineTuneJob.Method.DPO and dataset.format != Dataset.Format.PREFERENCE:
        return (f"{dataset.filename} ({dataset.id}) holds {dataset.format} rows; DPO needs preference rows "
                '{"prompt": ..., "chosen": ..., "rejected": ...}')
    if method != FineTuneJob.Method.DPO and not dataset.training_format:
        return (f"{dataset.filename} ({dataset.id}) holds {dataset.format} rows; supervised fine-tuning "
                'needs chat, alpaca, prompt/completion or text rows (use method {"type": "dpo"} for preference pairs)')
    return ""


def _dataset_for(owner, file_id, param: str) -> Dataset:
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(f"{param} must be a file id like file-abc123", param=param)
    dataset = Dataset.objects.filter(owner=owner, pk=file_id).first()
    if dataset is None:  # another user's file is "no such file" too
        raise InvalidRequest(f"No such file: {file_id}", param=param, code="file_not_found")
    if dataset.status == Dataset.Status.INVALID:
        first = ((dataset.validation_report or {}).get("summary") or "").split("\n")[0]
        raise InvalidRequest(f"{file_id} ({dataset.filename}) failed validation: {first}; see "
                             f"GET /v1/datasets/{file_id}/report", param=param, code="invalid_file")
    return dataset


def _base_model_for(name) -> BaseModel:
    base = BaseModel.objects.filter(name=name).first() if isinstance(name, str) else None
    if base is None:
        known = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none"
        raise InvalidRequest(f"unknown base model {name!r}; available: {known}", param="model",
                             code="model_not_found")
    return base


def _suffix_check(suffix: str) -> None:
    if suffix and (len(suffix) > 64 or not all(c.isalnum() or c in "-_" for c in suffix)):
        raise InvalidRequest("suffix must be at most 64 letters, digits, - or _", param="suffix")


def job_transition(*, job_id: str, to: str, expect_attempt: int | None = None, message: str = "",
                   level: str = JobEvent.Level.INFO, data: dict | None = None, **fields) -> FineTuneJob:
    """Move a job to ``to`` if ``ALLOWED_TRANSITIONS`` permits; lock, save, then broadcast.

    ``expect_attempt``, when given, must still be the job's attempt: a worker whose lease was taken
    over can no longer write. ``fields`` are saved with the status.
    """
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=job_id)
        if to not in ALLOWED_TRANSITIONS[job.status]:
            raise Conflict(f"job {job_id} is {job.status} and cannot become {to}",
                           code="invalid_transition")
        if expect_attempt is not None and job.attempt != expect_attempt:
            raise Conflict(f"job {job_id} attempt {expect_attempt} is stale (now {job.attempt})",
                           code="stale_attempt")
        job.status = to
        for name, value in fields.items():
            setattr(job, name, value)
        job.save(update_fields=["status", *fields])
        job_event_add(job_id=job_id, message=message or f"Job {to.replace('_', ' ')}", level=level,
                      data={"status": to, "attempt": job.attempt, **(data or {})})
    return job


def job_event_add(*, job_id: str, message: str, type: str = JobEvent.Type.MESSAGE,
                  level: str = JobEvent.Level.INFO, data: dict | None = None,
                  expect_attempt: int | None = None) -> JobEvent:
    """Append an event with the job's next sequence number and publish it after commit.

    With ``expect_attempt``, a worker whose attempt was superseded cannot write (Conflict).
    """
    event = {"message": message, "type": type, "level": level, "data": data}
    return job_events_add(job_id=job_id, events=[event], expect_attempt=expect_attempt)[-1]


def job_events_add(*, job_id: str, events: list[dict], expect_attempt: int | None = None) -> list[JobEvent]:
    """Append ``events`` ({message, type, level, data}) in one transaction, numbered in order."""
    with transaction.atomic():
        rows = FineTuneJob.objects.filter(pk=job_id)
        if expect_attempt is not None:
            rows = rows.filter(attempt=expect_attempt)
        if not rows.update(event_seq=F("event_seq") + len(events)):
            raise Conflict(f"job {job_id} attempt {expect_attempt} is stale or gone", code="stale_attempt")
        last = FineTuneJob.objects.values_list("event_seq", flat=True).get(pk=job_id)
        created = JobEvent.objects.bulk_create([
            JobEvent(job_id=job_id, seq=last - len(events) + index, type=e.get("type", JobEvent.Type.MESSAGE),
                     level=e.get("level", JobEvent.Level.INFO), message=e["message"], data=e.get("data"))
            for index, e in enumerate(events, start=1)])
        newest = created[-1]  # subscribers read every row after the last one they have
        job_publish(job_id, {"event": {"seq": newest.seq, "type": newest.type, "level": newest.level,
                                       "message": newest.message, "data": newest.data}})
    return created


def job_cancel(*, job: FineTuneJob) -> FineTuneJob:
    """Cancel a job that has not finished; a running one stops within one training step."""
    if job.is_finished:
        raise Conflict(f"job {job.id} has already {job.status}; only unfinished jobs can be cancelled",
                       code="job_finished")
    return job_transition(job_id=job.id, to=Status.CANCELLED, finished_at=timezone.now(),
                          message="Job cancelled")


def job_validate(*, job_id: str) -> None:
    """Check the job's files against its method, then queue it for training.

    A file still being checked keeps the job in ``validating_files``: the dataset's check calls
    this again when it ends (``datasets_app.services._jobs_recheck``). A job whose rows would
    leave nothing to learn after truncation to ``max_length`` fails here, before it starts.
    """
    job = FineTuneJob.objects.select_related("dataset", "validation_dataset", "base_model").filter(pk=job_id).first()
    if job is None or job.status != Status.VALIDATING_FILES:
        return
    pending = [d for d in filter(None, [job.dataset, job.validation_dataset])
               if d.status in (Dataset.Status.UPLOADED, Dataset.Status.VALIDATING)]
    if pending:
        job_event_add(job_id=job_id, message="Waiting for " + ", ".join(
            f"{d.filename} ({d.id}) to be validated" for d in pending))
        return
    # Tokenizing (cached per content, tokenizer and template) happens before the row is locked.
    problem, code = _files_problem(job), "invalid_training_file"
    if not problem:
        problem = _template_problem(job)
        code = "invalid_template" if problem else code
    if not problem:
        _max_length_from_data(job)
        problem = _trainable_problem(job)
    overlap = "" if problem else _overlap_warning(job)
    estimate = {}
    if not problem:
        from workers.loading import ModelLoadError

        try:
            estimate = job_estimate(job=job)
        except ModelLoadError as exc:  # before any compute is spent on it
            job_fail(job_id=job_id, code="model_load_failed", message=str(exc))
            return
    with transaction.atomic():  # the lock makes a second, concurrent call a no-op
        locked = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Status.VALIDATING_FILES:
            return
        if problem:
            job_fail(job_id=job_id, code=code, message=problem)
            return
        if overlap:
            job_event_add(job_id=job_id, message=overlap, level=JobEvent.Level.WARN)
        job_transition(job_id=job_id, to=Status.QUEUED, queued_at=timezone.now(), estimate=estimate,
                       data={"estimate": estimate}, message="Files validated; job queued. " + _describe(estimate))
        transaction.on_commit(lambda: _job_run_task().delay(job_id))


def _overlap_warning(job: FineTuneJob) -> str:
    """A warning when the validation file repeats training rows (its loss would flatter the model)."""
    from workers.quality import validation_overlap

    if not job.validation_dataset:
        return ""
    workdir = Path(settings.WORK_DIR) / job.id / "overlap"
    try:
        train = storage_fetch(job.dataset.training_file_name, workdir / "train.jsonl")
        validation = storage_fetch(job.validation_dataset.training_file_name, workdir / "validation.jsonl")
        found = validation_overlap(str(train), str(validation), job.dataset.training_format, examples=3)
    except Exception:  # a warning is not worth failing the job for
        log.warning("overlap check of %s failed", job.id, exc_info=True)
        return ""
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    shared = found["same_rows"] + found["same_prompts"]
    if not shared:
        return ""
    pairs = ", ".join(f"validation row {e['validation_row']} = training row {e['train_row']}"
                      for e in found["examples"])
    return (f"{shared} of {found['validation_rows']} validation rows also appear in the training file "
            f"({found['same_rows']} whole, {found['same_prompts']} by their prompt; e.g. {pairs}): the validation "
            f"loss will look better than it is; prepare a split instead (POST /v1/datasets/{job.dataset_id}/prepare)")


def _job_token_stats(job: FineTuneJob, dataset: Dataset):
    """The dataset's rows tokenized as this job's trainer will (its model and template); None when
    they cannot be counted here (the run reports a model that cannot load with its own error code)."""
    from datasets_app.services import token_stats_compute

    try:
        return token_stats_compute(dataset_id=dataset.id, model=job.base_model.name,
                                   template=job.hyperparameters.get("template", ""))
    except Exception:
        log.warning("token statistics of %s failed", dataset.id, exc_info=True)
        return None


def _template_problem(job: FineTuneJob) -> str:
    """Why the job's template cannot render its rows (e.g. the model has no chat template); "" when it can."""
    if job.method == FineTuneJob.Method.DPO:
        return ""
    for dataset in filter(None, [job.dataset, job.validation_dataset]):
        stats = _job_token_stats(job, dataset)
        if stats is not None and stats.errors:
            error = stats.errors[0]
            template = job.hyperparameters.get("template", "") or "auto, the model's own"
            return (f"{dataset.filename}, row {error['row']}: {error['message']} (template {template}; "
                    "set the template hyperparameter)")
    return ""


def _max_length_from_data(job: FineTuneJob) -> None:
    """An "auto" max_length becomes the longest row (rounded up to 64 tokens), within the context."""
    if "max_length" not in job.hyperparameters.get("auto_resolved", []):
        return
    stats = _job_token_stats(job, job.dataset)
    if stats is None or not stats.totals or stats.sampled:
        return  # only an exact count may shorten max_length: a sample could miss the longest row
    longest = max(stats.totals)
    chosen = min(job.base_model.context_length, max(64, -(-longest // 64) * 64))
    if chosen == job.hyperparameters["max_length"]:
        return
    job.hyperparameters = {**job.hyperparameters, "max_length": chosen}
    FineTuneJob.objects.filter(pk=job.pk).update(hyperparameters=job.hyperparameters)
    context = job.base_model.context_length
    job_event_add(job_id=job.id, message=f"max_length resolved from the data to {chosen} tokens "
                                         f"(longest row {longest} tokens, model context {context})")


def _trainable_problem(job: FineTuneJob) -> str:
    """Rows that would have no trainable token after truncation, named; "" when there are none."""
    from datasets_app.services import token_stats_summary

    max_length = job.hyperparameters.get("max_length", 1024)
    stats = _job_token_stats(job, job.dataset)
    if stats is None:
        return ""
    summary = token_stats_summary(stats, max_length=max_length)
    count = summary["rows_without_trainable_tokens"]
    if not count:
        return ""
    rows = ", ".join(str(r) for r in summary["rows_without_trainable_tokens_examples"])
    return (f"{job.dataset.filename}: {count} rows would have no trainable tokens after truncation to max_length "
            f"{max_length} (rows {rows}); raise max_length (suggested {summary['suggested_max_length']}), "
            "shorten their prompts, or drop them")


CALIBRATE_BELOW_PARAMETERS = 100_000_000


def job_estimate(*, job: FineTuneJob) -> dict:
    """Tokens and steps from the data (tokenized as the trainer will); seconds and memory from
    past runs of the same base model and method, or a few measured steps for a small model."""
    from workers.estimate import calibrate, estimate, token_counts
    from workers.loading import ModelLoadError

    hp = job.hyperparameters
    workdir = Path(settings.WORK_DIR) / job.id / "estimate"
    try:
        config = _train_config(job, workdir, resume=False)
        try:
            counts = token_counts(config.model_path, config.train_file, config.max_length, config.template)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {job.base_model.source!r}: {exc}") from exc
        throughput, basis = _past_throughput(job), "past_runs"
        if throughput is None and (job.base_model.parameters or 10**12) < CALIBRATE_BELOW_PARAMETERS:
            throughput, basis = _calibrate_quietly(calibrate, config), "calibration"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"tokens_per_epoch": counts.tokens, "trainable_tokens_per_epoch": counts.trainable,
              "truncated_rows": counts.truncated_rows, "basis": basis if throughput else "none"}
    if throughput:
        e = estimate(counts, throughput, n_epochs=hp["n_epochs"], batch_size=hp["batch_size"])
        result.update(tokens=e.tokens, steps=e.steps, seconds=e.seconds, peak_memory_bytes=e.peak_memory_bytes,
                      tokens_per_second=round(throughput.tokens_per_second, 1))
    else:
        result.update(tokens=counts.tokens * hp["n_epochs"], seconds=None, peak_memory_bytes=None,
                      steps=-(-counts.rows // hp["batch_size"]) * hp["n_epochs"])
    return result


def _calibrate_quietly(calibrate, config):
    """A failed measurement only costs the estimate; the run itself reports the real error."""
    try:
        return calibrate(config)
    except Exception:
        log.warning("calibration of %s failed", config.model_path, exc_info=True)
        return None


def _past_throughput(job: FineTuneJob):
    return _past_throughput_of(job.base_model, job.hyperparameters["adapter"])


def _past_throughput_of(base_model, adapter: str):
    """Median tokens/s and the largest peak memory of the last finished runs of this model and adapter."""
    from workers.estimate import Throughput

    past = (FineTuneJob.objects.filter(base_model=base_model, status=Status.SUCCEEDED,
                                       hyperparameters__adapter=adapter)
            .exclude(metrics={}).order_by("-finished_at").values_list("metrics", flat=True)[:5])
    speeds = sorted(m["tokens_per_second"] for m in past if m.get("tokens_per_second"))
    if not speeds:
        return None
    return Throughput(tokens_per_second=speeds[len(speeds) // 2],
                      peak_memory_bytes=max(m.get("peak_memory_bytes", 0) for m in past))


def job_estimate_draft(*, dataset: Dataset, base_model, hyperparameters: dict) -> dict:
    """The wizard's estimate for a job not created yet: tokens and steps from the dataset's token
    statistics (asked for here, counted once per content and tokenizer by a worker; a token per 4
    bytes until then), seconds and peak memory from past runs of the same base model and adapter.

    ``seconds`` and ``peak_memory_bytes`` are None without such runs: the live page measures
    them from the first steps. ``tokens_basis`` says where the token count came from.
    """
    from datasets_app.models import TokenStats
    from datasets_app.services import token_stats_request

    rows, epochs, batch = dataset.row_count, hyperparameters["n_epochs"], hyperparameters["batch_size"]
    max_length = hyperparameters["max_length"]
    steps_per_epoch = math.ceil(rows / batch) if rows else 0
    result = {"rows": rows, "steps_per_epoch": steps_per_epoch, "steps": steps_per_epoch * epochs,
              "tokens_basis": "bytes", "trainable_tokens": None}
    try:
        stats = token_stats_request(dataset=dataset, base_model=base_model,
                                    template=hyperparameters.get("template", ""))
    except (Conflict, InvalidRequest):  # e.g. preference pairs: no supervised token counts
        stats = None
    if stats is not None and stats.status == TokenStats.Status.READY and stats.totals:
        scale = rows / len(stats.totals)  # a sample stands for every row
        kept = sum(min(total, max_length) for total in stats.totals)
        # truncation cuts the end, where the answer is: what survives of each target
        trainable = sum(max(0, min(target, max_length - (total - target)))
                        for total, target in zip(stats.totals, stats.targets, strict=True))
        tokens_per_epoch = round(kept * scale)
        result.update(tokens_basis="tokenizer", trainable_tokens=round(trainable * scale) * epochs)
    else:
        tokens_per_epoch = round(rows * min(dataset.byte_size / rows / 4, max_length)) if rows else 0
        result["stats_status"] = stats.status if stats is not None else "unavailable"
    result.update(tokens_per_epoch=tokens_per_epoch, tokens=tokens_per_epoch * epochs,
                  avg_tokens_per_row=round(tokens_per_epoch / rows) if rows else 0)
    throughput = _past_throughput_of(base_model, hyperparameters["adapter"])
    if throughput is None or not throughput.tokens_per_second:
        result.update(seconds=None, peak_memory_bytes=None, tokens_per_second=None, basis="none")
    else:
        result.update(seconds=round(result["tokens"] / throughput.tokens_per_second, 1),
                      peak_memory_bytes=throughput.peak_memory_bytes or None,
                      tokens_per_second=round(throughput.tokens_per_second, 1), basis="past_runs")
    return result


def _describe(estimate: dict) -> str:
    text = f"Estimate: {estimate['tokens']} tokens in {estimate['steps']} steps"
    if estimate.get("seconds") is not None:
        text += (f", about {estimate['seconds']:.0f} s of training, peak memory "
                 f"{estimate['peak_memory_bytes'] / 2**20:.0f} MiB (from {estimate['basis'].replace('_', ' ')})")
    return text


def _files_problem(job: FineTuneJob) -> str:
    for dataset in filter(None, [job.dataset, job.validation_dataset]):
        if dataset.status != Dataset.Status.READY:
            summary = (dataset.validation_report or {}).get("summary", "")
            return f"{dataset.filename} ({dataset.id}) is {dataset.status}, not ready" + (
                f": {summary.splitlines()[0]}" if summary else "")
        problem = _format_problem(dataset, job.method)
        if problem:
            return problem
    if job.validation_dataset and job.validation_dataset.format != job.dataset.format and \
            job.validation_dataset.training_format != job.dataset.training_format:
        return (f"validation file {job.validation_dataset.filename} is {job.validation_dataset.format} "
                f"but training file {job.dataset.filename} is {job.dataset.format}")
    return ""


def job_fail(*, job_id: str, code: str, message: str, attempt: int | None = None) -> FineTuneJob:
    """Fail the job with ``error = {code, message}``; ``attempt`` fences a stale worker out."""
    return job_transition(job_id=job_id, to=Status.FAILED, expect_attempt=attempt,
                          error={"code": code, "message": message, "param": None},
                          finished_at=timezone.now(), message=f"Job failed: {message}",
                          level=JobEvent.Level.ERROR)


def job_run(*, job_id: str, worker: str = "") -> None:
    """Claim a queued job for ``worker`` and train it; store what it produces.

    A resumed attempt continues from the job's last complete checkpoint. A crash requeues
    the job until ``max_attempts`` is reached, then fails it with the error.
    """
    from workers.loading import ModelLoadError

    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        return
    workdir = Path(settings.WORK_DIR) / job.id / str(job.attempt)
    try:
        with _Heartbeat(job):
            config = _train_config(job, workdir)
            reporter = JobReporter(job)
            try:
                with JobControl(job) as control:
                    result = _train(config, reporter, control, devices=job.hyperparameters.get("devices", 1))
            finally:
                reporter.close()  # every reported event and checkpoint is stored before the job moves on
        _job_finish(job, result)
    except Conflict:
        pass  # cancelled, or taken over by a newer attempt: that one owns the job now
    except ModelLoadError as exc:
        _job_fail_quietly(job, exc, code="model_load_failed")
    except Exception as exc:
        log.exception("job %s attempt %s failed", job.id, job.attempt)
        _job_retry_or_fail(job, exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _train(config, reporter, control, *, devices: int):
    """One process, or one per device through torchrun."""
    if devices > 1:
        from workers.distributed import run_distributed

        return run_distributed(config, reporter, processes=devices, should_stop=control)
    from workers.training import run_training

    return run_training(config, reporter, should_stop=control)


def job_claim(*, job_id: str, worker: str) -> FineTuneJob | None:
    """Take a queued job for ``worker``: bump its attempt (the fencing token), start its lease."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED:
            return None  # gone, cancelled, paused or already claimed: nothing to do
        if not _job_fits(job, worker):
            return None
        attempt = job.attempt + 1
        now = timezone.now()
        node = Worker.objects.filter(name=worker).first()
        device = {"device": node.devices.get("kind", "cpu") if node else "cpu",
                  "devices": job.hyperparameters.get("devices", 1)}
        return job_transition(
            job_id=job_id, to=Status.RUNNING, expect_attempt=job.attempt, attempt=attempt,
            metrics={**job.metrics, **device},
            lease_owner=worker, heartbeat_at=now, started_at=job.started_at or now, stop_request="", wait_reason="",
            message=f"Fine-tuning started on {worker or 'a worker'} (attempt {attempt} of {job.max_attempts})",
        )


def _job_fits(job: FineTuneJob, worker: str) -> bool:
    """Whether ``worker`` has the devices the job asks for; if not, say why on the job."""
    needed = job.hyperparameters.get("devices", 1)
    node = Worker.objects.filter(name=worker).first()
    capacity = node.capacity if node else 1
    if needed <= capacity:
        return True
    kind = (node.devices.get("kind", "cpu") if node else "cpu").upper()
    reason = f"waiting for a worker with {needed} devices; {worker or 'this worker'} has {capacity} ({kind})"
    if job.wait_reason != reason:
        FineTuneJob.objects.filter(pk=job.pk).update(wait_reason=reason, queued_at=timezone.now())
        job_event_add(job_id=job.id, level=JobEvent.Level.WARN, message=reason.capitalize())
    return False


def worker_register(*, name: str, devices: dict) -> Worker:
    """A worker starting up advertises its devices."""
    worker, _ = Worker.objects.update_or_create(name=name, defaults={"devices": devices})
    return worker


def worker_unregister(*, name: str) -> None:
    Worker.objects.filter(name=name).delete()


def _train_config(job: FineTuneJob, workdir: Path, *, resume: bool = True):
    from workers.config import TrainConfig

    hp = job.hyperparameters
    validation = None
    if job.validation_dataset:
        validation = str(storage_fetch(job.validation_dataset.training_file_name, workdir / "validation.jsonl"))
    return TrainConfig(
        model_path=base_model_local_path(job.base_model),
        train_file=str(storage_fetch(job.dataset.training_file_name, workdir / "train.jsonl")),
        validation_file=validation,
        output_dir=str(workdir / "output"),
        method=hp["adapter"],
        quantization=hp.get("quantization", "nf4"),
        objective="dpo" if job.method == FineTuneJob.Method.DPO else "sft",
        beta=hp.get("beta", 0.1),
        n_epochs=hp["n_epochs"],
        batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        max_length=hp["max_length"],
        template=hp.get("template", ""),  # jobs made before the hyperparameter: the model's own
        lora_r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        lora_target_modules=tuple(hp["lora_target_modules"]),
        seed=job.seed,
        logging_steps=hp["logging_steps"],
        save_steps=hp["save_steps"],
        eval_steps=hp.get("eval_steps", 0),
        resume_from=_resume_point(job, workdir / "resume") if resume else None,
    )


def _resume_point(job: FineTuneJob, target: Path) -> str | None:
    """Fetch the last complete checkpoint; forget the metrics of steps after it."""
    for checkpoint in job.checkpoints.order_by("-step"):
        local = checkpoint_fetch(checkpoint=checkpoint, target=target / f"checkpoint-{checkpoint.step}")
        if local is None:
            continue
        discarded, _ = job.events.filter(type=JobEvent.Type.METRICS, data__step__gt=checkpoint.step).delete()
        note = f"; {discarded} later metric events of the lost attempt discarded" if discarded else ""
        job_event_add(job_id=job.id, expect_attempt=job.attempt, data={"resume_step": checkpoint.step},
                      message=f"Resuming from the checkpoint at step {checkpoint.step}{note}")
        return str(local)
    return None


# What a checkpoint holds besides the weights: needed to resume training, not to use the model.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state", "trainer_state.json", "training_args.bin")


def checkpoint_fetch(*, checkpoint: Checkpoint, target: Path, weights_only: bool = False) -> Path | None:
    """Download a checkpoint whose manifest (written last) exists; None if it is incomplete.

    ``weights_only`` leaves out the optimizer, scheduler and RNG state (for evaluating it).
    """
    manifest_name = f"{checkpoint.storage_path}/{MANIFEST}"
    if not default_storage.exists(manifest_name):
        return None
    manifest = json.loads(storage_fetch(manifest_name, target / MANIFEST).read_text())
    for name in manifest["files"]:
        if not (weights_only and name.startswith(TRAINING_STATE)):
            storage_fetch(f"{checkpoint.storage_path}/{name}", target / name)
    return target


class _Heartbeat:
    """Renews the job's lease from a thread while this attempt runs; stops with the process."""

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{job.id}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        try:
            while not self.done.wait(settings.JOB_HEARTBEAT_SECONDS):
                job_heartbeat(job=self.job)
                Worker.objects.filter(name=self.job.lease_owner).update(last_seen=timezone.now())
        finally:
            connection.close()


def job_heartbeat(*, job: FineTuneJob) -> bool:
    """Renew the lease of this attempt; False once the job is no longer this attempt's."""
    renewed = FineTuneJob.objects.filter(pk=job.pk, status=Status.RUNNING, attempt=job.attempt).update(
        heartbeat_at=timezone.now()
    )
    return renewed == 1


class JobControl:
    """The engine's ``should_stop``: asked after every step, answered from the job's row.

    Reading the row every step cost a small model ~0.3 ms a step (a query after a step's
    compute is that slow on a busy CPU). The row is read instead when a message about the job
    arrived since the last read (every change of a job is published to its group after commit:
    a cancel, a pause request) and at least every ``CONTROL_POLL_SECONDS`` (a stop request that
    sends none: a worker shutting down; a lost message). Without a channel layer: every step.
    A context manager: leaving it stops listening.
    """

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job
        self.changed = threading.Event()
        self.changed.set()  # the first step reads the row
        self.read_at = 0.0
        rows = FineTuneJob.objects.filter(pk=job.pk).values_list("status", "attempt", "stop_request")
        self.sql, self.params = rows.query.sql_with_params()  # built once, run every read
        try:
            self.unlisten = job_listen(job.id, self._heard)
        except Exception:
            log.warning("job %s: no channel layer; its row is read every step", job.id, exc_info=True)
            self.unlisten = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        if self.unlisten is not None:
            try:
                self.unlisten()
            except Exception:
                log.warning("job %s: could not stop listening", self.job.id, exc_info=True)

    def _heard(self, message: dict) -> None:
        if message.get("event", {}).get("type") != JobEvent.Type.METRICS:  # our own metrics change nothing
            self.changed.set()

    def __call__(self):
        from workers.config import Stop

        quiet = time.monotonic() - self.read_at < CONTROL_POLL_SECONDS
        if self.unlisten is not None and quiet and not self.changed.is_set():
            return Stop.NO
        self.changed.clear()  # before the read: a message during it is seen at the next step
        self.read_at = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(self.sql, self.params)
            row = cursor.fetchone()
        if row is None or tuple(row[:2]) != (Status.RUNNING, self.job.attempt):
            return Stop.DISCARD  # cancelled, or another attempt owns the job
        return Stop.CHECKPOINT if row[2] else Stop.NO


CONTROL_POLL_SECONDS = 0.5


def _job_finish(job: FineTuneJob, result) -> None:
    from workers.config import Stop

    if result.stop == Stop.CHECKPOINT:
        _job_release(job, step=result.steps)
    elif not result.stopped:
        _job_succeed(job, result)


def _job_release(job: FineTuneJob, *, step: int) -> None:
    """After a checkpoint asked for by pause or worker shutdown: pause or requeue the job."""
    request = FineTuneJob.objects.values_list("stop_request", flat=True).get(pk=job.pk)
    if request == FineTuneJob.StopRequest.PAUSE:
        job_transition(job_id=job.id, to=Status.PAUSED, expect_attempt=job.attempt, stop_request="",
                       lease_owner="", message=f"Paused after the checkpoint at step {step}")
        return
    _job_requeue(job, f"Worker {job.lease_owner or ''} is shutting down; checkpoint at step {step} saved, "
                      "job requeued")


def _job_requeue(job: FineTuneJob, message: str, level: str = JobEvent.Level.INFO) -> None:
    with transaction.atomic():
        job_transition(job_id=job.id, to=Status.QUEUED, expect_attempt=job.attempt, stop_request="",
                       lease_owner="", queued_at=timezone.now(), message=message, level=level)
        transaction.on_commit(lambda: _job_run_task().delay(job.id))


def _job_retry_or_fail(job: FineTuneJob, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        if job.attempt < job.max_attempts:
            _job_requeue(job, f"Attempt {job.attempt} failed: {error}; retrying "
                              f"(attempt {job.attempt + 1} of {job.max_attempts})", level=JobEvent.Level.WARN)
        else:
            job_fail(job_id=job.id, code="training_failed", attempt=job.attempt,
                     message=f"{error} (failed {job.attempt} of {job.max_attempts} attempts)")
    except Conflict:
        pass


def jobs_reap() -> dict:
    """Recover jobs whose worker died (lease expired) and queued jobs whose message was lost."""
    now = timezone.now()
    lost = FineTuneJob.objects.filter(
        status=Status.RUNNING, heartbeat_at__lt=now - timedelta(seconds=settings.JOB_LEASE_SECONDS)
    )
    reaped = [job.id for job in lost if _job_lost(job)]
    stale = now - timedelta(seconds=settings.JOB_REQUEUE_SECONDS)
    resent = []
    for job in FineTuneJob.objects.filter(status=Status.QUEUED, queued_at__lt=stale):
        # A duplicate message is harmless: only one claim of a queued job can succeed.
        if FineTuneJob.objects.filter(pk=job.pk, status=Status.QUEUED, queued_at=job.queued_at).update(queued_at=now):
            _job_run_task().delay(job.id)
            resent.append(job.id)
    for job_id in FineTuneJob.objects.filter(status=Status.VALIDATING_FILES, created_at__lt=stale).values_list(
            "pk", flat=True):
        _job_validate_task().delay(job_id)
    return {"reaped": reaped, "resent": resent}


def _job_lost(job: FineTuneJob) -> bool:
    message = (f"Worker {job.lease_owner or '?'} stopped sending heartbeats for "
               f"{settings.JOB_LEASE_SECONDS}s during attempt {job.attempt}")
    try:
        if job.attempt < job.max_attempts:
            _job_requeue(job, f"{message}; requeued to resume from its last checkpoint", level=JobEvent.Level.WARN)
        else:
            job_fail(job_id=job.id, code="worker_lost", attempt=job.attempt,
                     message=f"{message}; no attempts left ({job.max_attempts})")
    except Conflict:
        return False  # it moved on meanwhile (heartbeat, cancel): leave it
    return True


def jobs_release_for_shutdown(*, worker: str) -> int:
    """A worker is stopping: ask its running jobs to checkpoint and go back to the queue."""
    return FineTuneJob.objects.filter(status=Status.RUNNING, lease_owner=worker, stop_request="").update(
        stop_request=FineTuneJob.StopRequest.REQUEUE
    )


def job_pause(*, job: FineTuneJob) -> FineTuneJob:
    """Pause a job: at once when queued, after a checkpoint of its current step when running."""
    if job.status == Status.RUNNING:
        FineTuneJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(stop_request=FineTuneJob.StopRequest.PAUSE)
        job_event_add(job_id=job.id, message="Pause requested: stopping at the next step's checkpoint")
        job.refresh_from_db()
        return job
    if job.status not in (Status.QUEUED, Status.VALIDATING_FILES):
        raise Conflict(f"job {job.id} is {job.status}; only queued or running jobs can be paused",
                       code="invalid_transition")
    return job_transition(job_id=job.id, to=Status.PAUSED, message="Job paused")


def job_resume(*, job: FineTuneJob) -> FineTuneJob:
    """Put a paused job back in the queue; it continues from its last checkpoint."""
    if job.status != Status.PAUSED:
        raise Conflict(f"job {job.id} is {job.status}; only paused jobs can be resumed", code="invalid_transition")
    with transaction.atomic():
        job = job_transition(job_id=job.id, to=Status.QUEUED, queued_at=timezone.now(), message="Job resumed")
        transaction.on_commit(lambda: _job_run_task().delay(job.id))
    return job


def _job_succeed(job: FineTuneJob, result) -> None:
    metrics = {**FineTuneJob.objects.values_list("metrics", flat=True).get(pk=job.pk),
               "train_loss": result.train_loss, "wall_seconds": round(result.wall_seconds, 3),
               "tokens_per_second": round(result.tokens_per_second, 1),
               "peak_memory_bytes": result.peak_memory_bytes, "steps": result.steps}
    with transaction.atomic():
        job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=job.attempt,
                       trained_tokens=result.trained_tokens, finished_at=timezone.now(), metrics=metrics,
                       lease_owner="", data=metrics,
                       message=f"Job succeeded: {result.steps} steps, {result.trained_tokens} tokens, "
                               f"{result.tokens_per_second:.0f} tokens/s, "
                               f"peak memory {result.peak_memory_bytes / 2**20:.0f} MiB")
        job.refresh_from_db()
        model = fine_tuned_model_create(job=job, adapter_dir=Path(result.adapter_dir))
        if evaluation_for_job(model=model):
            job_event_add(job_id=job.id, message=f"Evaluating {model.reference} against {job.base_model.name} "
                                                 f"on the validation file")


def _job_fail_quietly(job: FineTuneJob, exc: Exception, code: str = "training_failed") -> None:
    message = str(exc) if code != "training_failed" else f"{type(exc).__name__}: {exc}"
    try:
        job_fail(job_id=job.id, code=code, message=message[:2000], attempt=job.attempt)
    except Conflict:
        pass


class JobReporter:
    """The ``emit`` the engine calls: events become JobEvent and Checkpoint rows.

    Rows are written by a background thread, in order, so the training loop never waits on the
    database or the channel layer; ``close`` waits until everything reported is stored.
    """

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job
        self.first: tuple[int, float] | None = None
        self.stale = False
        self.batched_at = 0.0
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._drain, daemon=True, name=f"events-{job.id}")
        self.thread.start()

    def __call__(self, event) -> None:
        if isinstance(event, Metric):  # pace and time are taken when the step ends, not when it is written
            self.queue.put((event, self._eta(event), time.time()))
        elif isinstance(event, LogLine | ArtifactSaved):
            self.queue.put(event)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _drain(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                for group in _runs_of_metrics(batch):
                    if not self.stale:
                        self._write(group)
        finally:
            connection.close()

    def _next_batch(self) -> list | None:
        """What arrived until BATCH_SECONDS after the previous batch: one transaction for many
        steps, yet an event after a quiet spell (the first step, a log line) goes at once."""
        batch = [self.queue.get()]
        deadline = self.batched_at + BATCH_SECONDS
        while batch[-1] is not None and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self.queue.get(timeout=left))
            except queue.Empty:
                break
        if batch[-1] is None:
            batch.pop()
            if batch:
                self.queue.put(None)  # write these, then stop
            return batch or None
        self.batched_at = time.monotonic()
        return batch

    def _write(self, group) -> None:
        try:
            if isinstance(group, list):
                self._metrics(group)
            elif isinstance(group, LogLine):
                job_event_add(job_id=self.job.id, message=group.message, level=group.level,
                              expect_attempt=self.job.attempt)
            elif isinstance(group, ArtifactSaved) and group.kind == "checkpoint":
                self._checkpoint(group)
        except Conflict:
            self.stale = True  # another attempt owns the job: this one records nothing more
        except Exception:
            log.exception("could not record an event of %s", self.job.id)

    def _metrics(self, items: list[tuple[Metric, float | None, float]]) -> None:
        rows = [row for row in (self._metric(*item) for item in items) if row]
        if not rows:
            return
        etas = [eta for _, eta, _ in items if eta is not None]
        if etas:
            FineTuneJob.objects.filter(pk=self.job.pk, attempt=self.job.attempt).update(
                estimated_finish=timezone.now() + timedelta(seconds=etas[-1]))
        job_events_add(job_id=self.job.id, events=rows, expect_attempt=self.job.attempt)

    def _metric(self, event: Metric, eta: float | None, ended: float) -> dict | None:
        values = event.values
        if "loss" not in values and "eval_loss" not in values:
            return None  # the trainer's closing summary; the final transition reports it
        data = {"step": event.step, "total_steps": event.total_steps, "time": round(ended, 3)}
        data.update({_metric_name(k): v for k, v in values.items()})
        parts = [f"{k.replace('_', ' ')}={v:.4g}" for k, v in data.items()
                 if k in ("train_loss", "valid_loss", "learning_rate")]
        if eta is not None:
            data["eta_seconds"] = eta
        return {"type": JobEvent.Type.METRICS, "data": data,
                "message": f"Step {event.step}/{event.total_steps}: " + ", ".join(parts)}

    def _eta(self, event: Metric) -> float | None:
        """Seconds left, from the pace of the steps this attempt has run."""
        now = time.monotonic()
        if self.first is None:
            self.first = (event.step, now)
            return None
        done = event.step - self.first[0]
        if done <= 0:
            return None
        return round((now - self.first[1]) / done * (event.total_steps - event.step), 1)

    def _checkpoint(self, event: ArtifactSaved) -> None:
        directory = Path(event.path)
        (directory / MANIFEST).write_text(_manifest(directory, event))
        prefix = f"jobs/{self.job.id}/checkpoints/step-{event.step}"
        storage_put_dir(directory, prefix, last=MANIFEST)
        with transaction.atomic():  # the fenced event first: a superseded attempt records nothing
            job_event_add(job_id=self.job.id, message=f"Saved checkpoint at step {event.step}",
                          data={"checkpoint_step": event.step}, expect_attempt=self.job.attempt)
            Checkpoint.objects.update_or_create(job=self.job, step=event.step,
                                                defaults={"storage_path": prefix, "metrics": event.metrics})


_METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}
# Events are stored at most this late, in one transaction per batch: each batch costs the busy
# CPU ~3 ms (benchmarks/overhead.py), and a progress bar moving once a second looks live.
BATCH_SECONDS = 1.0


def _runs_of_metrics(batch: list) -> list:
    """Consecutive metric events grouped into lists; other events stay single, in order."""
    groups: list = []
    for item in batch:
        if isinstance(item, tuple):
            if groups and isinstance(groups[-1], list):
                groups[-1].append(item)
            else:
                groups.append([item])
        else:
            groups.append(item)
    return groups


def _metric_name(name: str) -> str:
    return _METRIC_NAMES.get(name, name)


def _manifest(directory: Path, event: ArtifactSaved) -> str:
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and p.name != MANIFEST)
    return json.dumps({"step": event.step, "metrics": event.metrics, "files": files})


def _job_validate_task():
    from jobs_app.tasks import job_validate as task

    return task


def _job_run_task():
    from jobs_app.tasks import job_run as task

    return task
