"""A job's status and its history: the only writer of ``FineTuneJob.status``.

``job_transition`` checks ``ALLOWED_TRANSITIONS``; ``job_actions`` tells pages which buttons the
same rules allow, so a page never offers what the service would refuse.
"""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.humane import ended_text
from finetune_site.request_id import request_id_get
from finetune_site.status import status_allows, status_transition
from jobs_app import tasks
from jobs_app.broadcast import job_publish
from jobs_app.models import ALLOWED_TRANSITIONS, FineTuneJob, JobEvent
from jobs_app.signals import job_transitioned

Status = FineTuneJob.Status


def job_transition(*, job_id: str, to: str, expect_attempt: int | None = None, message: str = "",
                   level: str = JobEvent.Level.INFO, data: dict | None = None, **fields) -> FineTuneJob:
    """Move a job to ``to`` if ``ALLOWED_TRANSITIONS`` permits; lock, save, then broadcast.

    ``expect_attempt``, when given, must still be the job's attempt: a worker whose lease was taken
    over can no longer write. ``fields`` are saved with the status.
    """
    def fence(job: FineTuneJob) -> None:
        if expect_attempt is not None and job.attempt != expect_attempt:
            raise Conflict(f"job {job_id} attempt {expect_attempt} is stale (now {job.attempt})",
                           code="stale_attempt")

    previous = {}

    def fence_and_remember(job: FineTuneJob) -> None:
        fence(job)
        previous["status"] = job.status

    with transaction.atomic():
        job = status_transition(FineTuneJob, job_id, to, rules=ALLOWED_TRANSITIONS, check=fence_and_remember,
                                **fields)
        job_event_add(job_id=job_id, message=message or f"Job {to.replace('_', ' ')}", level=level,
                      data={"status": to, "attempt": job.attempt, **(data or {})})
        # in the transaction: what apps above write about it (a webhook's outbox row) commits with it
        job_transitioned.send(sender=FineTuneJob, job=job, previous=previous["status"])
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
        request_id = request_id_get()  # one id finds the request, its tasks and the events they wrote
        created = JobEvent.objects.bulk_create([
            JobEvent(job_id=job_id, seq=last - len(events) + index, type=e.get("type", JobEvent.Type.MESSAGE),
                     level=e.get("level", JobEvent.Level.INFO), message=e["message"], data=e.get("data"),
                     request_id=request_id)
            for index, e in enumerate(events, start=1)])
        newest = created[-1]  # subscribers read every row after the last one they have
        job_publish(job_id, {"event": {"seq": newest.seq, "type": newest.type, "level": newest.level,
                                       "message": newest.message, "data": newest.data}})
    return created


def job_metrics_add(*, job_id: str, values: dict) -> None:
    """Merge ``values`` into the job's metrics (what apps above record about it, e.g. how long its
    evaluation took per row, for later estimates)."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is not None:
            job.metrics = {**job.metrics, **values}
            job.save(update_fields=["metrics"])


def job_send(job: FineTuneJob) -> None:
    """Queue the task that runs a queued job: a training worker's, or for a job on a remote provider the
    one that starts and follows it there (default queue: it needs no device)."""
    (tasks.job_remote_run if job.provider_id else tasks.job_run).delay(job.id)


def job_actions(job: FineTuneJob) -> dict[str, bool]:
    """Which of cancel, pause and resume the rules allow for ``job`` now (what pages offer); a job on a
    remote provider can be cancelled, not paused (OpenAI-compatible APIs need not pause)."""
    allows = {to: status_allows(ALLOWED_TRANSITIONS, job.status, to) for to in (Status.CANCELLED, Status.PAUSED)}
    if job.provider_id:
        allows[Status.PAUSED] = False
    return {
        "cancel": allows[Status.CANCELLED],
        # a running job pauses after a checkpoint: asked once, then it is on its way
        "pause": allows[Status.PAUSED] and not (job.status == Status.RUNNING and job.stop_request),
        "resume": status_allows(ALLOWED_TRANSITIONS, job.status, Status.QUEUED) and job.status == Status.PAUSED,
    }


def job_fail(*, job_id: str, code: str, message: str, attempt: int | None = None) -> FineTuneJob:
    """Fail the job with ``error = {code, message}``; ``attempt`` fences a stale worker out."""
    return job_transition(job_id=job_id, to=Status.FAILED, expect_attempt=attempt,
                          error={"code": code, "message": message, "param": None},
                          finished_at=timezone.now(), message=f"Job failed: {message}",
                          level=JobEvent.Level.ERROR)


def job_cancel(*, job: FineTuneJob, reason: str = "") -> FineTuneJob:
    """Cancel a job that has not finished; a running one stops within one training step. ``reason``
    (e.g. "pruned by sweep ...") is said in the event that records it."""
    if not job_actions(job)["cancel"]:
        raise Conflict(f"job {job.id} {ended_text(job.status)}; only unfinished jobs can be cancelled",
                       code="job_finished")
    with transaction.atomic():
        job = job_transition(job_id=job.id, to=Status.CANCELLED, finished_at=timezone.now(),
                             message=f"Job cancelled: {reason}" if reason else "Job cancelled",
                             data={"reason": reason} if reason else None)
        if job.provider_id and job.remote_job_id:  # the provider's job stops too (not in this request)
            transaction.on_commit(lambda: tasks.job_remote_cancel.delay(job.id))
    return job


def job_pause(*, job: FineTuneJob) -> FineTuneJob:
    """Pause a job: at once when queued, after a checkpoint of its current step when running."""
    if not job_actions(job)["pause"]:
        raise Conflict(f"job {job.id} is {job.status}; only queued or running jobs can be paused",
                       code="invalid_transition")
    if job.status != Status.RUNNING:
        return job_transition(job_id=job.id, to=Status.PAUSED, message="Job paused")
    FineTuneJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(stop_request=FineTuneJob.StopRequest.PAUSE)
    job_event_add(job_id=job.id, message="Pause requested: stopping at the next step's checkpoint")
    job.refresh_from_db()
    return job


def job_requeue(job: FineTuneJob, message: str, level: str = JobEvent.Level.INFO) -> None:
    """Back to the queue (this attempt's lease ends); a worker resumes it from its last checkpoint."""
    with transaction.atomic():
        job_transition(job_id=job.id, to=Status.QUEUED, expect_attempt=job.attempt, stop_request="",
                       lease_owner="", queued_at=timezone.now(), message=message, level=level)
        transaction.on_commit(lambda: job_send(job))


def job_resume(*, job: FineTuneJob) -> FineTuneJob:
    """Put a paused job back in the queue; it continues from its last checkpoint."""
    if not job_actions(job)["resume"]:
        raise Conflict(f"job {job.id} is {job.status}; only paused jobs can be resumed", code="invalid_transition")
    with transaction.atomic():
        job = job_transition(job_id=job.id, to=Status.QUEUED, queued_at=timezone.now(), message="Job resumed")
        transaction.on_commit(lambda: job_send(job))
    return job
