"""Writes for fine-tuning jobs. Only ``job_transition`` writes ``FineTuneJob.status``."""

import json
import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from datasets_app.models import Dataset
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch, storage_put_dir
from jobs_app.broadcast import job_publish
from jobs_app.hyperparameters import hyperparameters_resolve
from jobs_app.models import ALLOWED_TRANSITIONS, Checkpoint, FineTuneJob, JobEvent
from models_app.models import BaseModel
from models_app.services import base_model_local_path, fine_tuned_model_create
from workers.events import ArtifactSaved, LogLine, Metric

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
MANIFEST = "manifest.json"
UNKNOWN_ROWS = 10_000


def job_create(*, owner, training_file: str, model: str, validation_file: str | None = None,
               hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
               ) -> FineTuneJob:
    """Check the request, resolve every "auto" hyperparameter and queue file validation."""
    dataset = _dataset_for(owner, training_file, "training_file")
    validation = _dataset_for(owner, validation_file, "validation_file") if validation_file else None
    base = _base_model_for(model)
    _suffix_check(suffix)
    # A file still being checked has no row count yet: size the batch as for a large file.
    rows = dataset.row_count if dataset.status == Dataset.Status.READY else UNKNOWN_ROWS
    resolved = hyperparameters_resolve(hyperparameters, parameters=base.parameters,
                                       rows=rows, context_length=base.context_length)
    with transaction.atomic():
        job = FineTuneJob.objects.create(
            owner=owner, dataset=dataset, validation_dataset=validation, base_model=base,
            hyperparameters=resolved, suffix=suffix or "", seed=42 if seed is None else seed,
        )
        job_event_add(job_id=job.id, message=f"Created fine-tuning job: {job.id}")
        transaction.on_commit(lambda: _job_validate_task().delay(job.id))
    return job


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
                   level: str = JobEvent.Level.INFO, **fields) -> FineTuneJob:
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
                      data={"status": to})
    return job


def job_event_add(*, job_id: str, message: str, type: str = JobEvent.Type.MESSAGE,
                  level: str = JobEvent.Level.INFO, data: dict | None = None) -> JobEvent:
    """Append an event with the job's next sequence number and publish it after commit."""
    with transaction.atomic():
        FineTuneJob.objects.filter(pk=job_id).update(event_seq=F("event_seq") + 1)
        seq = FineTuneJob.objects.values_list("event_seq", flat=True).get(pk=job_id)
        event = JobEvent.objects.create(job_id=job_id, seq=seq, type=type, level=level,
                                        message=message, data=data)
        job_publish(job_id, {"event": {"seq": seq, "type": type, "level": level,
                                       "message": message, "data": data}})
    return event


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
    problem = _files_problem(job) or _trainable_problem(job)
    overlap = "" if problem else _overlap_warning(job)
    with transaction.atomic():  # the lock makes a second, concurrent call a no-op
        locked = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Status.VALIDATING_FILES:
            return
        if problem:
            job_fail(job_id=job_id, code="invalid_training_file", message=problem)
            return
        if overlap:
            job_event_add(job_id=job_id, message=overlap, level=JobEvent.Level.WARN)
        job_transition(job_id=job_id, to=Status.QUEUED, message="Files validated; job queued")
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


def _trainable_problem(job: FineTuneJob) -> str:
    """Rows that would have no trainable token after truncation, named; "" when there are none."""
    from datasets_app.services import token_stats_compute, token_stats_summary

    max_length = job.hyperparameters.get("max_length", 1024)
    try:
        stats = token_stats_compute(dataset_id=job.dataset_id, model=job.base_model.name)
    except Exception:  # a model that cannot load fails the run itself, with its own error code
        log.warning("token statistics of %s failed", job.dataset_id, exc_info=True)
        return ""
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


def _files_problem(job: FineTuneJob) -> str:
    for dataset in filter(None, [job.dataset, job.validation_dataset]):
        if dataset.status != Dataset.Status.READY:
            summary = (dataset.validation_report or {}).get("summary", "")
            return f"{dataset.filename} ({dataset.id}) is {dataset.status}, not ready" + (
                f": {summary.splitlines()[0]}" if summary else "")
        if not dataset.training_format:
            return (f"{dataset.filename} ({dataset.id}) holds {dataset.format} rows; supervised fine-tuning "
                    "needs chat, alpaca, prompt/completion or text rows")
    if job.validation_dataset and job.validation_dataset.training_format != job.dataset.training_format:
        return (f"validation file {job.validation_dataset.filename} is {job.validation_dataset.format} "
                f"but training file {job.dataset.filename} is {job.dataset.format}")
    return ""


def job_fail(*, job_id: str, code: str, message: str, attempt: int | None = None) -> FineTuneJob:
    """Fail the job with ``error = {code, message}``; ``attempt`` fences a stale worker out."""
    return job_transition(job_id=job_id, to=Status.FAILED, expect_attempt=attempt,
                          error={"code": code, "message": message, "param": None},
                          finished_at=timezone.now(), message=f"Job failed: {message}",
                          level=JobEvent.Level.ERROR)


def job_run(*, job_id: str) -> None:
    """Train a queued job on this worker and store what it produces."""
    from workers.training import ModelLoadError, run_training

    job = _job_start(job_id)
    if job is None:
        return
    workdir = Path(settings.WORK_DIR) / job.id / str(job.attempt)
    try:
        config = _train_config(job, workdir)
        reporter = JobReporter(job)
        result = run_training(config, reporter, should_stop=lambda: _job_superseded(job))
        if not result.stopped:
            _job_succeed(job, result)
    except Conflict:
        pass  # cancelled (or taken over) meanwhile: the job's state is already final
    except ModelLoadError as exc:
        _job_fail_quietly(job, exc, code="model_load_failed")
    except Exception as exc:
        log.exception("job %s failed", job.id)
        _job_fail_quietly(job, exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _job_start(job_id: str) -> FineTuneJob | None:
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED:
            return None  # deleted or cancelled while queued: nothing to do
        return job_transition(job_id=job_id, to=Status.RUNNING, expect_attempt=job.attempt,
                              attempt=job.attempt + 1, started_at=timezone.now(),
                              message="Fine-tuning started")


def _train_config(job: FineTuneJob, workdir: Path):
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
        n_epochs=hp["n_epochs"],
        batch_size=hp["batch_size"],
        learning_rate=hp["learning_rate"],
        max_length=hp["max_length"],
        lora_r=hp["lora_r"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        lora_target_modules=tuple(hp["lora_target_modules"]),
        seed=job.seed,
        logging_steps=hp["logging_steps"],
        save_steps=hp["save_steps"],
    )


def _job_superseded(job: FineTuneJob) -> bool:
    """True once the job was cancelled or another attempt took it over."""
    row = FineTuneJob.objects.filter(pk=job.pk).values_list("status", "attempt").first()
    return row is None or row != (Status.RUNNING, job.attempt)


def _job_succeed(job: FineTuneJob, result) -> None:
    with transaction.atomic():
        job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=job.attempt,
                       trained_tokens=result.trained_tokens, finished_at=timezone.now(),
                       message=f"Job succeeded: {result.steps} steps, {result.trained_tokens} tokens, "
                               f"{result.tokens_per_second:.0f} tokens/s")
        job.refresh_from_db()
        fine_tuned_model_create(job=job, adapter_dir=Path(result.adapter_dir))


def _job_fail_quietly(job: FineTuneJob, exc: Exception, code: str = "training_failed") -> None:
    message = str(exc) if code != "training_failed" else f"{type(exc).__name__}: {exc}"
    try:
        job_fail(job_id=job.id, code=code, message=message[:2000], attempt=job.attempt)
    except Conflict:
        pass


class JobReporter:
    """The ``emit`` the engine calls: events become JobEvent and Checkpoint rows."""

    def __init__(self, job: FineTuneJob) -> None:
        self.job = job

    def __call__(self, event) -> None:
        if isinstance(event, Metric):
            self._metric(event)
        elif isinstance(event, LogLine):
            job_event_add(job_id=self.job.id, message=event.message, level=event.level)
        elif isinstance(event, ArtifactSaved) and event.kind == "checkpoint":
            self._checkpoint(event)

    def _metric(self, event: Metric) -> None:
        values = event.values
        if "loss" not in values and "eval_loss" not in values:
            return  # the trainer's closing summary; the final transition reports it
        data = {"step": event.step, "total_steps": event.total_steps}
        data.update({_metric_name(k): v for k, v in values.items()})
        parts = [f"{k.replace('_', ' ')}={v:.4g}" for k, v in data.items()
                 if k in ("train_loss", "valid_loss", "learning_rate")]
        job_event_add(job_id=self.job.id, type=JobEvent.Type.METRICS, data=data,
                      message=f"Step {event.step}/{event.total_steps}: " + ", ".join(parts))

    def _checkpoint(self, event: ArtifactSaved) -> None:
        directory = Path(event.path)
        (directory / MANIFEST).write_text(_manifest(directory, event))
        prefix = f"jobs/{self.job.id}/checkpoints/step-{event.step}"
        storage_put_dir(directory, prefix, last=MANIFEST)
        Checkpoint.objects.update_or_create(job=self.job, step=event.step,
                                            defaults={"storage_path": prefix, "metrics": event.metrics})
        job_event_add(job_id=self.job.id, message=f"Saved checkpoint at step {event.step}",
                      data={"step": event.step})


_METRIC_NAMES = {"loss": "train_loss", "eval_loss": "valid_loss"}


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
