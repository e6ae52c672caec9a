"""Running a job on a worker: claim it, train it, and store what comes out, or requeue it."""

import json
import logging
import shutil
import time
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.files import storage_fetch
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Worker
from jobs_app.services.engine import MANIFEST, JobControl, JobReporter
from jobs_app.services.judges import judges_local
from jobs_app.services.leases import Heartbeat
from jobs_app.services.lifecycle import job_event_add, job_fail, job_metrics_add, job_requeue, job_transition
from jobs_app.services.results import job_result_file_create
from jobs_app.signals import job_succeeded
from models_app.base_models.services import base_model_local_path
from workers.graders import judge_names
from workers.hyperparameters import options_complete
from workers.loading import ModelLoadError

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
# What a checkpoint holds besides the weights: needed to resume training, not to use the model.
TRAINING_STATE = ("optimizer.pt", "optimizer_", "scheduler.pt", "rng_state", "trainer_state.json", "training_args.bin")


def job_run(*, job_id: str, worker: str = "") -> None:
    """Claim a queued job for ``worker`` and train it; store what it produces.

    A resumed attempt continues from the job's last complete checkpoint. A crash requeues
    the job until ``max_attempts`` is reached, then fails it with the error.
    """

    job = job_claim(job_id=job_id, worker=worker)
    if job is None:
        return
    workdir = Path(settings.WORK_DIR) / job.id / str(job.attempt)
    try:
        with Heartbeat(job):
            config = train_config(job, workdir)
            reporter = JobReporter(job)
            try:
                with JobControl(job) as control:
                    result = _train(config, reporter, control)
            finally:
                reporter.close()  # every reported event and checkpoint is stored before the job moves on
        _job_finish(job, result, trained_at=time.monotonic())
    except Conflict:
        pass  # cancelled, or taken over by a newer attempt: that one owns the job now
    except ModelLoadError as exc:
        _job_fail_quietly(job, exc, code="model_load_failed")
    except Exception as exc:
        log.exception("job %s attempt %s failed", job.id, job.attempt)
        _job_retry_or_fail(job, exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _train(config, reporter, control):
    """One process, or one per device through torchrun."""
    if config.devices > 1:
        from workers.distributed import run_distributed

        return run_distributed(config, reporter, should_stop=control)
    from workers.training import run_training

    return run_training(config, reporter, should_stop=control)


def job_claim(*, job_id: str, worker: str) -> FineTuneJob | None:
    """Take a queued job for ``worker``: bump its attempt (the fencing token), start its lease."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED or job.provider_id:
            return None  # gone, cancelled, paused, already claimed, or a remote provider's: nothing to do
        if not _job_fits(job, worker):
            return None
        attempt = job.attempt + 1
        now = timezone.now()
        node = Worker.objects.filter(name=worker).first()
        device = {"device": node.devices.get("kind", "cpu") if node else "cpu",
                  "devices": job.hyperparameters["devices"]}
        return job_transition(
            job_id=job_id, to=Status.RUNNING, expect_attempt=job.attempt, attempt=attempt,
            metrics={**job.metrics, **device},
            lease_owner=worker, heartbeat_at=now, started_at=job.started_at or now, stop_request="", wait_reason="",
            message=f"Fine-tuning started on {worker or 'a worker'} (attempt {attempt} of {job.max_attempts})",
        )


def _job_fits(job: FineTuneJob, worker: str) -> bool:
    """Whether ``worker`` has the devices the job asks for; if not, say why on the job."""
    needed = job.hyperparameters["devices"]
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


def train_config(job: FineTuneJob, workdir: Path, *, resume: bool = True):
    """The engine's config for ``job``: its files fetched into ``workdir``, its options as stored."""
    from workers.config import TrainConfig

    validation = None
    if job.validation_dataset:
        validation = str(storage_fetch(job.validation_dataset.training_file_name, workdir / "validation.jsonl"))
    return TrainConfig(
        model_path=base_model_local_path(job.base_model),
        train_file=str(storage_fetch(job.dataset.training_file_name, workdir / "train.jsonl")),
        validation_file=validation,
        output_dir=str(workdir / "output"),
        objective=job.objective,
        grader=json.dumps(job.grader) if job.grader else "",
        judges=json.dumps(judges_local(job.owner, job.grader)) if job.grader and judge_names(job.grader) else "",
        seed=job.seed,
        stream_rows=_stream_rows(job.dataset),
        resume_from=_resume_point(job, workdir / "resume") if resume else None,
        **options_complete(job.hyperparameters),
    )


def _stream_rows(dataset) -> int:
    """The rows the trainer streams from the training file (counted by validation), 0 to load them
    into memory: files past ``TRAIN_STREAM_ABOVE_BYTES`` are streamed."""
    return dataset.row_count if dataset.byte_size > settings.TRAIN_STREAM_ABOVE_BYTES else 0


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


def _job_finish(job: FineTuneJob, result, *, trained_at: float) -> None:
    from workers.config import Stop

    if result.stop == Stop.CHECKPOINT:
        _job_release(job, step=result.steps)
    elif not result.stopped:
        _job_succeed(job, result, trained_at=trained_at)


def _job_release(job: FineTuneJob, *, step: int) -> None:
    """After a checkpoint asked for by pause or worker shutdown: pause or requeue the job."""
    request = FineTuneJob.objects.values_list("stop_request", flat=True).get(pk=job.pk)
    if request == FineTuneJob.StopRequest.PAUSE:
        job_transition(job_id=job.id, to=Status.PAUSED, expect_attempt=job.attempt, stop_request="",
                       lease_owner="", message=f"Paused after the checkpoint at step {step}")
        return
    job_requeue(job, f"Worker {job.lease_owner or ''} is shutting down; checkpoint at step {step} saved, "
                     "job requeued")


def _job_retry_or_fail(job: FineTuneJob, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        if job.attempt < job.max_attempts:
            job_requeue(job, f"Attempt {job.attempt} failed: {error}; retrying "
                             f"(attempt {job.attempt + 1} of {job.max_attempts})", level=JobEvent.Level.WARN)
        else:
            job_fail(job_id=job.id, code="training_failed", attempt=job.attempt,
                     message=f"{error} (failed {job.attempt} of {job.max_attempts} attempts)")
    except Conflict:
        pass


def _job_succeed(job: FineTuneJob, result, *, trained_at: float) -> None:
    metrics = {**FineTuneJob.objects.values_list("metrics", flat=True).get(pk=job.pk),
               "train_loss": result.train_loss, "wall_seconds": round(result.wall_seconds, 3),
               "tokens_per_second": round(result.tokens_per_second, 1),
               "peak_memory_bytes": result.peak_memory_bytes, "steps": result.steps, **_paces(job, result)}
    with transaction.atomic():
        job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=job.attempt,
                       trained_tokens=result.trained_tokens, finished_at=timezone.now(), metrics=metrics,
                       lease_owner="", data=metrics,
                       message=f"Job succeeded: {result.steps:,} steps, {result.trained_tokens:,} tokens, "
                               f"{result.tokens_per_second:,.0f} tokens/s, "
                               f"peak memory {result.peak_memory_bytes / 2**20:,.0f} MiB")
        FineTuneJob.objects.filter(pk=job.pk).update(result_file=job_result_file_create(job))
        job.refresh_from_db()
        # In the same transaction: the registry stores the weights as a model version (and queues
        # its evaluation); if that fails the job is not marked succeeded and its attempt is retried.
        job_succeeded.send(sender=FineTuneJob, job=job, output_dir=Path(result.adapter_dir))
        # what the next estimate of this model and adapter starts from: the final save, storing the
        # weights and registering the version
        finishing = result.final_save_seconds + time.monotonic() - trained_at
        job_metrics_add(job_id=job.id, values={"finishing_seconds": round(finishing, 3)})


def _paces(job: FineTuneJob, result) -> dict:
    """Where this run's time went, for the next estimates (see ``estimates.past_throughput``)."""
    paces = {"setup_seconds": result.setup_seconds, "step_tokens_per_second": round(result.step_tokens_per_second, 1),
             "eval_seconds": result.eval_seconds, "evals": result.evals, "save_seconds": result.save_seconds,
             "saves": result.saves, "step_seconds": result.step_seconds}
    validation_tokens = (job.estimate or {}).get("validation_tokens")
    if result.eval_seconds and validation_tokens:
        paces["eval_tokens_per_second"] = round(validation_tokens * result.evals / result.eval_seconds, 1)
    return paces


def _job_fail_quietly(job: FineTuneJob, exc: Exception, code: str = "training_failed") -> None:
    message = str(exc) if code != "training_failed" else f"{type(exc).__name__}: {exc}"
    try:
        job_fail(job_id=job.id, code=code, message=message[:2000], attempt=job.attempt)
    except Conflict:
        pass
