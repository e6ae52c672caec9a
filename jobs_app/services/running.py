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

from accounts_app.selectors import user_in_project
from finetune_site.errors import Conflict
from finetune_site.files import storage_delete_all, storage_fetch
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Worker
from jobs_app.services.engine import MANIFEST, JobControl, JobReporter
from jobs_app.services.gangs import (
    GangSeat,
    NodeWatch,
    gang_follow,
    gang_gather,
    gang_parts_wait,
    gang_rendezvous,
    gang_seat,
    gang_shortfall,
    job_nodes,
)
from jobs_app.services.judges import judges_local
from jobs_app.services.leases import Heartbeat, worker_capacity
from jobs_app.services.lifecycle import (
    job_event_add,
    job_fail,
    job_metrics_add,
    job_requeue,
    job_send,
    job_transition,
)
from jobs_app.services.quotas import claims_serialize, queue_ordered
from jobs_app.services.results import job_result_file_create
from jobs_app.services.tracking import job_trackers, job_tracking_store
from jobs_app.services.vision import vision_config, vision_designer, vision_summary, vision_thumbnails
from jobs_app.signals import job_succeeded
from models_app.base_models.services import base_model_local_path
from workers.graders import judge_names
from workers.hyperparameters import options_complete
from workers.loading import ModelLoadError
from workers.vision import DesignError

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
Objective = FineTuneJob.Objective
# What a checkpoint holds besides the weights: needed to resume training, not to use the model.
TRAINING_STATE = ("optimizer.pt", "optimizer_", "scheduler.pt", "rng_state", "trainer_state.json", "training_args.bin",
                  "early_stopping")  # vision: the best epoch's weights so far (workers.vision.train)


def job_run(*, job_id: str, worker: str = "") -> None:
    """Claim the next queued job for ``worker`` and train it; store what it produces.

    When that job spans several nodes, the worker takes a seat in its gang instead (``gang_seat``): the
    first node gathers the others and claims the job once they have all joined; each node trains its
    share. A resumed attempt continues from the job's last complete checkpoint. A crash requeues the job
    until ``max_attempts`` is reached, then fails it with the error.
    """
    taken = job_claim_next(job_id=job_id, worker=worker)
    if isinstance(taken, GangSeat):
        if taken.node == 0:
            job = gang_gather(seat=taken, worker=worker, claim=job_claim)
        else:
            job = gang_follow(seat=taken)
        if job is not None:
            _job_attempt(job, worker=worker, node=taken.node)
    elif taken is not None:
        _job_attempt(taken, worker=worker)


def _job_attempt(job: FineTuneJob, *, worker: str, node: int = 0) -> None:
    """Train this attempt of ``job`` here: on its only node, or as node ``node`` of its gang (only the
    node holding global rank 0 gets a result to store)."""
    workdir = Path(settings.WORK_DIR) / job.id / (f"{job.attempt}-node{node}" if node else str(job.attempt))
    try:
        with Heartbeat(job, worker):
            vision = job.objective == Objective.VISION
            config = (vision_config(job, workdir, resume_from=_resume_point(job, workdir / "resume") or "") if vision
                      else train_config(job, workdir, announce=node == 0))
            reporter = JobReporter(job, node=node)
            try:
                with JobControl(job) as control:
                    result = (_vision_train(config, reporter, control) if vision
                              else _train(config, reporter, control, job=job, worker=worker, node=node))
            finally:
                reporter.close()  # every reported event and checkpoint is stored before the job moves on
            job_tracking_store(job, workdir)  # a node without rank 0 has nothing there
        if result is not None:
            if job_nodes(job) > 1:
                gang_parts_wait(job)  # the last checkpoint is whole before the job finishes or pauses
            _job_finish(job, result, trained_at=time.monotonic())
    except Conflict:
        pass  # cancelled, or taken over by a newer attempt: that one owns the job now
    except ModelLoadError as exc:
        _job_fail_quietly(job, exc, code="model_load_failed")
    except DesignError as exc:  # the designer's proposals were all refused: another attempt would ask the same
        _job_fail_quietly(job, exc, code="design_refused")
    except Exception as exc:
        log.exception("job %s attempt %s failed", job.id, job.attempt)
        _job_retry_or_fail(job, exc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        queue_wake()


def _train(config, reporter, control, *, job: FineTuneJob, worker: str, node: int):
    """One process, or one per device through torchrun (on each node of a job over several)."""
    if config.devices > 1 or config.nodes > 1:
        from workers.distributed import run_distributed

        if config.nodes == 1:
            return run_distributed(config, reporter, should_stop=control)
        return run_distributed(config, reporter, should_stop=control, rendezvous=gang_rendezvous(job, node),
                               node_lost=NodeWatch(job, worker))
    from workers.training import run_training

    return run_training(config, reporter, should_stop=control)


def _vision_train(config, reporter, control):
    """A vision job's strategy (``workers.vision``): like a language model's run, it checkpoints each epoch
    (or every ``save_steps``) and at a pause or shutdown, and a later attempt continues from its last one."""
    from workers.vision import run_vision_training

    return run_vision_training(config, reporter, control, designer=vision_designer())


def job_claim_next(*, job_id: str, worker: str) -> FineTuneJob | GangSeat | None:
    """Take the next queued job for ``worker``: bump its attempt (the fencing token), start its lease. For
    a job over several nodes, seat the worker in its gang instead (``gang_seat``; claimed once complete).

    A message names ``job_id``, but only says that a job waits: the worker takes the first job in the
    queue's order (``quotas.queue_ordered``: priority, fair share, age) that its account's quota allows
    and its devices fit, which may be another one. That job's own message then takes the next; each
    job passed over for its quota, its devices or too few registered workers says why in its
    ``wait_reason``. A gathering gang reserves the workers that joined it: a later job gets this worker
    only if the gang cannot use it (complete, or more devices per node than the worker has).
    """
    with transaction.atomic():
        claims_serialize()
        for candidate, problem in queue_ordered():
            if not problem and job_nodes(candidate) > 1:
                problem = gang_shortfall(candidate)
            if problem:
                _job_wait(candidate, problem)
                continue
            job = FineTuneJob.objects.select_for_update().filter(pk=candidate.pk, status=Status.QUEUED).first()
            if job is None:
                continue  # cancelled or paused meanwhile
            if job_nodes(job) > 1:
                seat = gang_seat(job=job, worker=worker)
                if seat is not None:
                    return seat
                continue
            if not _job_fits(job, worker):
                continue  # it needs more devices than this worker has
            if job.id != job_id:
                log.info("the message of %s took %s, first in the queue's order", job_id, job.id)
            return _job_start(job, worker)
    return None


def job_claim(*, job_id: str, worker: str) -> FineTuneJob | None:
    """Take the queued job ``job_id`` itself for ``worker`` (a gang's first node claims its job so), if its
    account's quota allows and the worker's devices fit; else None, the job saying why it waits."""
    with transaction.atomic():
        claims_serialize()
        problem = {queued.id: why for queued, why in queue_ordered()}.get(job_id)
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED or job.provider_id or problem is None:
            return None  # gone, cancelled, paused, already claimed, or a remote provider's: nothing to do
        if problem:
            _job_wait(job, problem)
            return None
        if not _job_fits(job, worker):
            return None
        return _job_start(job, worker)


def _job_start(job: FineTuneJob, worker: str) -> FineTuneJob:
    attempt = job.attempt + 1
    now = timezone.now()
    node = Worker.objects.filter(name=worker).first()
    device = {"device": node.devices.get("kind", "cpu") if node else "cpu",
              "devices": job.hyperparameters.get("devices", 1)}
    return job_transition(
        job_id=job.id, to=Status.RUNNING, expect_attempt=job.attempt, attempt=attempt,
        metrics={**job.metrics, **device},
        lease_owner=worker, heartbeat_at=now, started_at=job.started_at or now, stop_request="", wait_reason="",
        message=f"Fine-tuning started on {worker or 'a worker'} (attempt {attempt} of {job.max_attempts})",
    )


def _job_wait(job: FineTuneJob, reason: str) -> None:
    """Say on the job why it is not running, once per reason."""
    if job.wait_reason != reason:
        FineTuneJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(wait_reason=reason)
        job_event_add(job_id=job.id, level=JobEvent.Level.WARN, message=reason[0].upper() + reason[1:])


def _job_fits(job: FineTuneJob, worker: str) -> bool:
    """Whether ``worker`` has the devices the job asks for; if not, say why on the job."""
    needed = job.hyperparameters.get("devices", 1)  # vision: one process
    capacity = worker_capacity(worker)
    if needed <= capacity:
        return True
    node = Worker.objects.filter(name=worker).first()
    kind = (node.devices.get("kind", "cpu") if node else "cpu").upper()
    reason = f"waiting for a worker with {needed} devices; {worker or 'this worker'} has {capacity} ({kind})"
    if job.wait_reason != reason:
        FineTuneJob.objects.filter(pk=job.pk).update(queued_at=timezone.now())
        _job_wait(job, reason)
    return False


def queue_wake() -> None:
    """A job left its worker: send one message for the queue, so a free worker takes the next job in
    order. The messages of jobs that waited for their quota were spent on claims that passed them over."""
    waiting = FineTuneJob.objects.filter(status=Status.QUEUED, provider__isnull=True).exclude(wait_reason="").first()
    if waiting is not None:
        job_send(waiting)


def train_config(job: FineTuneJob, workdir: Path, *, resume: bool = True, announce: bool = True):
    """The engine's config for ``job``: its files fetched into ``workdir``, its options as stored.
    ``announce``: the resume is said on the job (once per attempt: by its first node only)."""
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
        judges=(json.dumps(judges_local(user_in_project(job.owner, job.project), job.grader))
                if job.grader and judge_names(job.grader) else ""),
        seed=job.seed,
        trackers=job_trackers(job, workdir),
        run_name=job.id,
        stream_rows=_stream_rows(job.dataset),
        resume_from=_resume_point(job, workdir / "resume", announce=announce) if resume else None,
        **options_complete(job.hyperparameters),
    )


def _stream_rows(dataset) -> int:
    """The rows the trainer streams from the training file (counted by validation), 0 to load them
    into memory: files past ``TRAIN_STREAM_ABOVE_BYTES`` are streamed."""
    return dataset.row_count if dataset.byte_size > settings.TRAIN_STREAM_ABOVE_BYTES else 0


def _resume_point(job: FineTuneJob, target: Path, *, announce: bool = True) -> str | None:
    """Fetch the last complete checkpoint; forget the metrics of steps after it (if ``announce``)."""
    for checkpoint in job.checkpoints.order_by("-step"):
        local = checkpoint_fetch(checkpoint=checkpoint, target=target / f"checkpoint-{checkpoint.step}")
        if local is None:
            continue
        if not announce:
            return str(local)
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
    elif not result.stopped and job.objective == Objective.VISION:
        _vision_succeed(job, result)
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


def _vision_succeed(job: FineTuneJob, result) -> None:
    """A trained classifier: its strategy, design and evaluation kept on the job, its weights a model version."""
    metrics = {**FineTuneJob.objects.values_list("metrics", flat=True).get(pk=job.pk),
               "train_loss": result.train_loss, "valid_loss": result.valid_loss,
               "valid_accuracy": result.valid_accuracy, "wall_seconds": round(result.wall_seconds, 3),
               "steps": result.steps, "epochs": result.epochs, "best_epoch": result.best_epoch,
               "parameters": result.parameters}
    accuracy = (result.evaluation or {}).get("accuracy")
    held_out = f", held-out accuracy {accuracy:.1%}" if accuracy is not None else ""
    vision = vision_summary(result, job=job)  # its thumbnails stored first, outside the row locks
    try:
        with transaction.atomic():
            job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=job.attempt, trained_tokens=0,
                           finished_at=timezone.now(), metrics=metrics, vision=vision, lease_owner="", data=metrics,
                           message=f"Job succeeded: {result.strategy}, {result.epochs} epochs (kept epoch "
                                   f"{result.best_epoch}), {result.parameters:,} parameters{held_out}")
            FineTuneJob.objects.filter(pk=job.pk).update(result_file=job_result_file_create(job))
            job.refresh_from_db()
            job_succeeded.send(sender=FineTuneJob, job=job, output_dir=Path(result.model_dir))
    except BaseException:  # not succeeded (cancelled meanwhile, the registry failed): no thumbnails left behind
        storage_delete_all(vision_thumbnails(vision))
        raise


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
