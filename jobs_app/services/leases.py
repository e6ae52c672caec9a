"""Leases: a running attempt renews its heartbeat; the reaper recovers jobs whose worker died,
and queued or validating jobs whose message was lost. Workers register their devices and say they are
alive for as long as they run (``WorkerLiveness``)."""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from finetune_site.errors import Conflict
from finetune_site.humane import count_text
from jobs_app import tasks
from jobs_app.models import FineTuneJob, JobEvent, Worker
from jobs_app.services.lifecycle import job_fail, job_requeue, job_send

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
WORKER_FORGET_SECONDS = 24 * 3600  # the reaper deletes the row of a worker unseen this long


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
            job_send(job)
            resent.append(job.id)
    for job_id in FineTuneJob.objects.filter(status=Status.VALIDATING_FILES, created_at__lt=stale).values_list(
            "pk", flat=True):
        tasks.job_validate.delay(job_id)
    forgotten = Worker.objects.filter(last_seen__lt=now - timedelta(seconds=WORKER_FORGET_SECONDS))
    forgotten.delete()  # killed without unregistering, long ago; a live one re-registers when it comes back
    return {"reaped": reaped, "resent": resent}


def _job_lost(job: FineTuneJob) -> bool:
    message = (f"Worker {job.lease_owner or '?'} stopped sending heartbeats for "
               f"{settings.JOB_LEASE_SECONDS}s during attempt {job.attempt}")
    try:
        if job.attempt < job.max_attempts:
            job_requeue(job, f"{message}; requeued to resume from its last checkpoint", level=JobEvent.Level.WARN)
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


def job_heartbeat(*, job: FineTuneJob) -> bool:
    """Renew the lease of this attempt; False once the job is no longer this attempt's."""
    renewed = FineTuneJob.objects.filter(pk=job.pk, status=Status.RUNNING, attempt=job.attempt).update(
        heartbeat_at=timezone.now()
    )
    return renewed == 1


class Heartbeat:
    """Renews the job's lease (and the liveness of ``worker``, by default the job's lease owner) from a
    thread while this attempt runs; stops with the process."""

    def __init__(self, job: FineTuneJob, worker: str = "") -> None:
        self.job = job
        self.worker = worker or job.lease_owner
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
            while True:  # at once, then every period: the other nodes of a job watch this worker's last_seen
                if job_timeout_enforce(job=self.job):
                    return
                job_heartbeat(job=self.job)
                worker_seen(name=self.worker)
                if self.done.wait(self._pause()):
                    return
        finally:
            connection.close()

    def _pause(self) -> float:
        """Until the next heartbeat, or the job's timeout when that comes first."""
        deadline = job_deadline(self.job)
        if deadline is None:
            return settings.JOB_HEARTBEAT_SECONDS
        return max(0.0, min(settings.JOB_HEARTBEAT_SECONDS, (deadline - timezone.now()).total_seconds()))


def job_deadline(job: FineTuneJob):
    """When the job's ``timeout`` (seconds from its first start, pauses and retries included) runs out;
    None without one."""
    timeout = job.hyperparameters.get("timeout") or 0
    if not timeout or job.started_at is None:
        return None
    return job.started_at + timedelta(seconds=timeout)


def job_timeout_enforce(*, job: FineTuneJob) -> bool:
    """Fail this attempt's job with error code ``timeout`` once its deadline passed; the training loop
    then sees the job is no longer running and stops (``JobControl``)."""
    deadline = job_deadline(job)
    if deadline is None or timezone.now() < deadline:
        return False
    timeout = job.hyperparameters["timeout"]
    try:
        job_fail(job_id=job.id, code="timeout", attempt=job.attempt,
                 message=f"ran past its timeout of {count_text(timeout, 'second')} "
                         f"(started {job.started_at:%Y-%m-%d %H:%M:%S} UTC); "
                         "raise method.<type>.hyperparameters.timeout to give it longer")
    except Conflict:
        pass  # it ended, or moved on to another attempt, meanwhile
    return True


def worker_register(*, name: str, devices: dict) -> Worker:
    """A worker starting up advertises its devices."""
    worker, _ = Worker.objects.update_or_create(name=name, defaults={"devices": devices})
    return worker


def worker_capacity(name: str) -> int:
    """How many training processes a job may run on worker ``name`` (1 if it never registered)."""
    node = Worker.objects.filter(name=name).first()
    return node.capacity if node else 1


def worker_unregister(*, name: str) -> None:
    Worker.objects.filter(name=name).delete()


def worker_seen(*, name: str) -> bool:
    """Note that worker ``name`` is alive now; False when it has no row (it unregistered, or was forgotten)."""
    return Worker.objects.filter(name=name).update(last_seen=timezone.now()) == 1


class WorkerLiveness:
    """Refreshes a registered worker's ``last_seen`` every ``WORKER_HEARTBEAT_SECONDS`` from a daemon thread,
    from registration to shutdown, idle or not: a worker killed without unregistering then drops out of
    ``workers_alive`` within a few periods. Started and stopped in the worker's main process."""

    def __init__(self, *, name: str, period: float | None = None) -> None:
        self.name = name
        self.period = period if period is not None else settings.WORKER_HEARTBEAT_SECONDS
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"liveness-{name}")

    def start(self) -> "WorkerLiveness":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.done.wait(self.period):
            try:
                # only ever an update: a row deleted meanwhile (forgotten by the reaper, an operator, a test's
                # flush) stays gone until the worker starts again, so nothing re-registers behind their back
                worker_seen(name=self.name)
            except Exception:  # the database may be down for a while: keep trying, the next beat may pass
                log.warning("worker %s: could not record that it is alive", self.name, exc_info=True)
            finally:
                # hold no connection between beats: a pool child forked meanwhile would inherit its socket,
                # and closing the copy in the child would close the parent's connection too
                connection.close()
