"""Running a job on a remote provider (an OpenAI-compatible fine-tuning API) and mirroring it here.

``job_remote_run`` (the ``job_remote_run`` task, default queue: it needs no training device):

1. claims the queued job as a local run does (attempt +1, lease, heartbeat), so the reaper treats a
   worker that dies while following a remote job like one that dies training: the job is requeued and
   the next attempt picks up the same remote job;
2. uploads the files and creates the remote job once: each remote id is stored (fenced by the attempt)
   before the next step, and the remote job carries ``metadata.finetune_job = <our id>``, so an attempt
   that died between creating and storing finds it instead of creating a second one;
3. polls every ``REMOTE_POLL_SECONDS``: the remote's events (each once, by the remote's event id),
   checkpoints and status; ours stays ``running`` while it is followed (the remote's own status is in
   the events and ``remote_status``), and its end is ours: ``succeeded`` with the remote's
   ``fine_tuned_model`` id and cost, ``failed`` with the remote's error, or ``cancelled``.

A provider that refuses the key, the file or the job (a 4xx) fails the job at once with the
provider's own message; a provider that cannot be reached (timeouts, 429, 5xx) is retried as a
crashed attempt is (``max_attempts``).
"""

import logging
import shutil
import time
from pathlib import Path

import openai
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.files import storage_fetch
from jobs_app.models import REMOTE_PREFIX, Checkpoint, FineTuneJob, JobEvent, Provider
from jobs_app.services.costs import job_cost, remote_prices
from jobs_app.services.leases import Heartbeat
from jobs_app.services.lifecycle import job_event_add, job_events_add, job_fail, job_requeue, job_transition
from jobs_app.services.providers import provider_api_key
from workers.hyperparameters import OPENAI_NAMES

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
REMOTE_ENDED = {"succeeded", "failed", "cancelled"}
JOB_KEY = "finetune_job"  # the remote job's metadata key holding our job's id
TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError, openai.InternalServerError)


def job_remote_run(*, job_id: str, worker: str = "") -> None:
    """Claim a queued remote job for ``worker``, start it at its provider once, and follow it to its end."""
    job = job_remote_claim(job_id=job_id, worker=worker)
    if job is None:
        return
    provider = job.provider
    try:
        with Heartbeat(job):
            client = provider_client(provider)
            remote_id = job.remote_job_id or _remote_start(client, job)
            _remote_follow(client, job, remote_id)
    except Conflict:
        pass  # cancelled, or taken over by a newer attempt: that one owns the job now
    except TRANSIENT as exc:
        _retry_or_fail(job, exc)
    except openai.APIStatusError as exc:  # the provider refused: the key, the file or the job
        _fail_quietly(job, code="provider_refused", message=f"{provider.name} refused it: {remote_message(exc)}")
    except ValueError as exc:  # a sealed key this server cannot open
        _fail_quietly(job, code="provider_key_unreadable", message=f"{provider.name}: {exc}")
    except Exception as exc:  # our side broke (storage, database): retried as a crashed training attempt is
        log.exception("remote job %s attempt %s failed", job.id, job.attempt)
        _retry_or_fail(job, exc)


def job_remote_claim(*, job_id: str, worker: str) -> FineTuneJob | None:
    """Take a queued remote job for ``worker``: attempt +1 (the fencing token) and the lease, as a
    training worker's claim does; no devices to fit."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED or job.provider_id is None:
            return None
        attempt, now = job.attempt + 1, timezone.now()
        following = f"following remote job {job.remote_job_id}" if job.remote_job_id else "starting it there"
        return job_transition(
            job_id=job_id, to=Status.RUNNING, expect_attempt=job.attempt, attempt=attempt, lease_owner=worker,
            heartbeat_at=now, started_at=job.started_at or now, stop_request="", wait_reason="",
            message=f"Running on provider {job.provider.name}: {worker or 'a worker'} is {following} "
                    f"(attempt {attempt} of {job.max_attempts})")


def job_remote_cancel(*, job_id: str) -> None:
    """Cancel the remote job of a job cancelled here (the ``job_remote_cancel`` task); a remote job
    that already ended, or a provider that refuses, is noted in the events."""
    job = FineTuneJob.objects.select_related("provider").filter(pk=job_id).first()
    if job is None or job.provider is None or not job.remote_job_id:
        return
    try:
        provider_client(job.provider).fine_tuning.jobs.cancel(job.remote_job_id)
    except (openai.APIError, ValueError) as exc:
        job_event_add(job_id=job.id, level=JobEvent.Level.WARN,
                      message=f"Cancelling remote job {job.remote_job_id} failed: {remote_message(exc)}")
        return
    job_event_add(job_id=job.id, message=f"Remote job {job.remote_job_id} cancelled on {job.provider.name}")


def provider_client(provider: Provider) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.base_url, api_key=provider_api_key(provider), max_retries=2,
                         timeout=settings.REMOTE_TIMEOUT_SECONDS)


def remote_message(exc: Exception) -> str:
    """The provider's own words: the ``message`` of its error body, else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(getattr(exc, "message", "") or exc)


def _save(job: FineTuneJob, **fields) -> None:
    """Store ``fields`` if this attempt still owns the running job (else Conflict)."""
    if not FineTuneJob.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(**fields):
        raise Conflict(f"job {job.id} attempt {job.attempt} no longer runs", code="stale_attempt")
    for name, value in fields.items():
        setattr(job, name, value)


def _remote_start(client: openai.OpenAI, job: FineTuneJob) -> str:
    """Upload the files (each once) and create the remote job (once); its id, stored."""
    files = dict(job.remote_files or {})
    for key, dataset in (("training_file", job.dataset), ("validation_file", job.validation_dataset)):
        if dataset is not None and key not in files:
            files[key] = _upload(client, job, dataset)
            _save(job, remote_files=files)
            job_event_add(job_id=job.id, message=f"Uploaded {dataset.filename} to {job.provider.name} as {files[key]}")
    existing = client.fine_tuning.jobs.list(metadata={JOB_KEY: job.id}, limit=1).data
    remote = existing[0] if existing else client.fine_tuning.jobs.create(**_remote_request(job, files))
    try:
        _save(job, remote_job_id=remote.id)
    except Conflict:  # cancelled while it was being created: it must not run on, unseen
        client.fine_tuning.jobs.cancel(remote.id)
        raise
    job_event_add(job_id=job.id, message=f"{'Found' if existing else 'Created'} remote job {remote.id} on "
                                         f"{job.provider.name} ({remote.status})")
    return remote.id


def _upload(client: openai.OpenAI, job: FineTuneJob, dataset) -> str:
    workdir = Path(settings.WORK_DIR) / job.id / "remote"
    try:
        local = storage_fetch(dataset.training_file_name, workdir / f"{dataset.id}.jsonl")
        with open(local, "rb") as handle:
            return client.files.create(file=(dataset.filename, handle), purpose="fine-tune").id
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _remote_request(job: FineTuneJob, files: dict) -> dict:
    """The remote job: the same model, method and the options the user gave by OpenAI's names (the rest
    of ours mean nothing to another provider: it resolves its own "auto")."""
    hp = job.hyperparameters
    auto = set(hp.get("auto_resolved", []))
    given = {name: hp[name] for name in (*OPENAI_NAMES, "beta") if name in hp and name not in auto}
    section = {"hyperparameters": given, **({"grader": job.grader} if job.grader else {})}
    metadata = dict(list((job.metadata or {}).items())[:15]) | {JOB_KEY: job.id}
    request = {"model": job.base_model.name, "training_file": files["training_file"], "seed": job.seed,
               "method": {"type": job.objective, job.objective: section}, "metadata": metadata}
    if files.get("validation_file"):
        request["validation_file"] = files["validation_file"]
    if job.suffix:
        request["suffix"] = job.suffix
    return request


def _remote_follow(client: openai.OpenAI, job: FineTuneJob, remote_id: str) -> None:
    """Poll the remote job until it ends, or ours stops being this attempt's running job."""
    seen_status = job.metrics.get("remote_status")
    while True:
        remote = client.fine_tuning.jobs.retrieve(remote_id)
        _events_mirror(client, job, remote_id)
        _checkpoints_mirror(client, job, remote_id)
        if remote.status != seen_status:
            seen_status = remote.status
            _save(job, metrics={**job.metrics, "remote_status": remote.status})
            job_event_add(job_id=job.id, message=f"Remote job {remote_id} is {remote.status.replace('_', ' ')}",
                          data={"remote_status": remote.status}, expect_attempt=job.attempt)
        if remote.status in REMOTE_ENDED:
            _remote_end(job, remote)
            return
        now = FineTuneJob.objects.filter(pk=job.pk).values("status", "attempt", "stop_request").first()
        if now is None or now["attempt"] != job.attempt or now["status"] != Status.RUNNING:
            return  # cancelled (the cancel task stops the remote job) or taken over
        if now["stop_request"] == FineTuneJob.StopRequest.REQUEUE:  # this worker is shutting down
            job_requeue(job, f"Worker {job.lease_owner} is shutting down; another worker follows remote job "
                             f"{remote_id}")
            return
        time.sleep(settings.REMOTE_POLL_SECONDS)


def _events_mirror(client: openai.OpenAI, job: FineTuneJob, remote_id: str) -> None:
    """The remote's events not mirrored yet, oldest first, each once (by the remote's event id)."""
    seen = set(job.events.filter(data__has_key="remote_event_id").values_list("data__remote_event_id", flat=True))
    new = [e for e in client.fine_tuning.jobs.list_events(remote_id, limit=100) if e.id not in seen]
    if not new:
        return
    new.sort(key=lambda e: (e.created_at, (e.model_extra or {}).get("seq") or 0))
    levels = set(JobEvent.Level.values)
    job_events_add(job_id=job.id, expect_attempt=job.attempt, events=[
        {"message": e.message, "level": e.level if e.level in levels else JobEvent.Level.INFO,
         "type": JobEvent.Type.METRICS if e.type == "metrics" else JobEvent.Type.MESSAGE,
         "data": {**(e.data if isinstance(e.data, dict) else {}), "remote_event_id": e.id}} for e in new])


def _checkpoints_mirror(client: openai.OpenAI, job: FineTuneJob, remote_id: str) -> None:
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(remote_id, limit=100):
        metrics = checkpoint.metrics.model_dump(exclude_none=True) if checkpoint.metrics else {}
        metrics.pop("step", None)
        Checkpoint.objects.get_or_create(job=job, step=checkpoint.step_number, defaults={
            "storage_path": REMOTE_PREFIX + checkpoint.fine_tuned_model_checkpoint, "metrics": metrics})


def _remote_end(job: FineTuneJob, remote) -> None:
    """The remote job's end, made ours: its model id and cost, its error, or its cancellation."""
    now = timezone.now()
    provider = job.provider
    if remote.status == "succeeded":
        tokens = remote.trained_tokens or 0
        cost = {**job_cost(kind=provider.kind, prices=remote_prices(provider), model=job.base_model.name,
                           tokens=tokens, seconds=None, devices=1), "trained_tokens": tokens,
                "source": "the provider's trained_tokens × the price table"}
        job_transition(job_id=job.id, to=Status.SUCCEEDED, expect_attempt=job.attempt, finished_at=now,
                       remote_model=remote.fine_tuned_model or "", trained_tokens=tokens or None, cost=cost,
                       lease_owner="", message=f"Remote job {remote.id} succeeded: {remote.fine_tuned_model}",
                       data={"fine_tuned_model": remote.fine_tuned_model, "cost": cost})
    elif remote.status == "failed":
        error = remote.error
        message = (error.message if error and error.message else "the remote job failed without a message")
        job_transition(job_id=job.id, to=Status.FAILED, expect_attempt=job.attempt, finished_at=now, lease_owner="",
                       error={"code": (error.code if error and error.code else "remote_failed"),
                              "message": f"{provider.name}: {message}", "param": error.param if error else None},
                       message=f"Job failed: {provider.name}: {message}", level=JobEvent.Level.ERROR)
    else:
        job_transition(job_id=job.id, to=Status.CANCELLED, expect_attempt=job.attempt, finished_at=now,
                       lease_owner="", message=f"Remote job {remote.id} was cancelled on {provider.name}")


def _fail_quietly(job: FineTuneJob, *, code: str, message: str) -> None:
    try:
        job_fail(job_id=job.id, code=code, message=message, attempt=job.attempt)
    except Conflict:
        pass


def _retry_or_fail(job: FineTuneJob, exc: Exception) -> None:
    error = (f"{job.provider.name} could not be reached: {remote_message(exc)}" if isinstance(exc, TRANSIENT)
             else f"{type(exc).__name__}: {exc}")[:2000]
    try:
        if job.attempt < job.max_attempts:
            job_requeue(job, f"Attempt {job.attempt}: {error}; retrying (attempt {job.attempt + 1} of "
                             f"{job.max_attempts})", level=JobEvent.Level.WARN)
        else:
            job_fail(job_id=job.id, code="provider_unreachable", attempt=job.attempt,
                     message=f"{error} (failed {job.attempt} of {job.max_attempts} attempts)")
    except Conflict:
        pass
