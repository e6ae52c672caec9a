"""Before a job is queued: its files, its template and its rows checked, ``max_length`` fitted to
the data, and an estimate made. A job that could not learn anything fails here, before compute."""

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from datasets_app.models import Dataset
from datasets_app.services import token_stats_compute, token_stats_summary
from finetune_site.files import storage_fetch
from jobs_app.models import FineTuneJob, JobEvent
from jobs_app.services.creation import job_format_problem
from jobs_app.services.estimates import estimate_describe, job_estimate
from jobs_app.services.lifecycle import job_event_add, job_fail, job_send, job_transition
from jobs_app.services.vision import vision_estimate
from workers.loading import ModelLoadError

log = logging.getLogger(__name__)
Status = FineTuneJob.Status


def job_validate(*, job_id: str) -> None:
    """Check the job's files against its objective, then queue it for training.

    A file still being checked keeps the job in ``validating_files``: the dataset's verdict calls
    this again (``jobs_app.receivers``). A job whose rows would leave nothing to learn after
    truncation to ``max_length`` fails here, before it starts.
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
    if job.objective == FineTuneJob.Objective.VISION:  # its images were checked with the dataset: no rows to read
        _job_queue(job_id, problem="", code="", overlap="", estimate=vision_estimate(job))
        return
    # Tokenizing (cached per content, tokenizer and template) happens before the row is locked.
    problem, code = _problem_of(job)
    overlap = "" if problem else _overlap_warning(job)
    estimate = {}
    if not problem and job.provider_id is None:  # a remote job's time and memory are its provider's
        try:
            estimate = job_estimate(job=job)
        except ModelLoadError as exc:  # before any compute is spent on it
            job_fail(job_id=job_id, code="model_load_failed", message=str(exc))
            return
    _job_queue(job_id, problem=problem, code=code, overlap=overlap, estimate=estimate)


def _problem_of(job: FineTuneJob) -> tuple[str, str]:
    """The first reason the job cannot train, and its error code; ("", "") when there is none."""
    problem = _files_problem(job)
    if problem:
        return problem, "invalid_training_file"
    problem = _template_problem(job)
    if problem:
        return problem, "invalid_template"
    _max_length_from_data(job)
    return _trainable_problem(job), "invalid_training_file"


def _job_queue(job_id: str, *, problem: str, code: str, overlap: str, estimate: dict) -> None:
    with transaction.atomic():  # the lock makes a second, concurrent call a no-op
        locked = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Status.VALIDATING_FILES:
            return
        if problem:
            job_fail(job_id=job_id, code=code, message=problem)
            return
        if overlap:
            job_event_add(job_id=job_id, message=overlap, level=JobEvent.Level.WARN)
        then = (estimate_describe(estimate) if estimate else
                f"It runs on provider {locked.provider.name}" if locked.provider_id else "")
        job = job_transition(job_id=job_id, to=Status.QUEUED, queued_at=timezone.now(), estimate=estimate,
                             data={"estimate": estimate}, message="Files validated; job queued. " + then)
        transaction.on_commit(lambda: job_send(job))


def _files_problem(job: FineTuneJob) -> str:
    for dataset in filter(None, [job.dataset, job.validation_dataset]):
        if dataset.status != Dataset.Status.READY:
            summary = (dataset.validation_report or {}).get("summary", "")
            return f"{dataset.filename} ({dataset.id}) is {dataset.status}, not ready" + (
                f": {summary.splitlines()[0]}" if summary else "")
        problem = job_format_problem(dataset, job.objective)
        if problem:
            return problem
    if job.validation_dataset and job.validation_dataset.format != job.dataset.format and \
            job.validation_dataset.training_format != job.dataset.training_format:
        return (f"validation file {job.validation_dataset.filename} is {job.validation_dataset.format} "
                f"but training file {job.dataset.filename} is {job.dataset.format}")
    return ""


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
    if not dataset.training_format or job.base_model.is_remote:  # preference pairs: counted by the trainer;
        return None  # a remote provider's model: by the provider
    try:
        return token_stats_compute(dataset_id=dataset.id, model=job.base_model.name,
                                   template=job.hyperparameters.get("template", ""))
    except Exception:
        log.warning("token statistics of %s failed", dataset.id, exc_info=True)
        return None


def _template_problem(job: FineTuneJob) -> str:
    """Why the job's template cannot render its rows (e.g. the model has no chat template); "" when it can."""
    if "template" not in job.hyperparameters:  # the objective reads no template (preference pairs)
        return ""
    for dataset in filter(None, [job.dataset, job.validation_dataset]):
        stats = _job_token_stats(job, dataset)
        if stats is not None and stats.errors:
            error = stats.errors[0]
            template = job.hyperparameters["template"] or "auto, the model's own"
            return (f"{dataset.filename}, row {error['row']}: {error['message']} (template {template}; "
                    "set the template hyperparameter)")
    return ""


def _max_length_from_data(job: FineTuneJob) -> None:
    """An "auto" max_length becomes the longest row (rounded up to 64 tokens), within the context."""
    if "max_length" not in job.hyperparameters["auto_resolved"]:
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
    max_length = job.hyperparameters.get("max_length")
    stats = _job_token_stats(job, job.dataset) if max_length else None  # reinforcement samples its answers
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
