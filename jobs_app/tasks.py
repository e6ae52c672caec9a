"""Celery tasks for jobs: thin wrappers that take a job id and call a service."""

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down

from finetune_site.errors import Conflict
from jobs_app import services
from jobs_app.models import FineTuneJob

_liveness: dict[str, "services.WorkerLiveness"] = {}  # this process's registered workers, by name


@shared_task(name="jobs_app.tasks.job_validate")
def job_validate(job_id: str) -> None:
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    try:
        services.job_validate(job_id=job_id)
    except Conflict:
        pass  # cancelled meanwhile: its state is already final
    except Exception as exc:
        services.job_fail(job_id=job_id, code="validation_error", message=f"{type(exc).__name__}: {exc}")
        raise


@shared_task(name="jobs_app.tasks.job_run", bind=True)
def job_run(self, job_id: str) -> None:
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    services.job_run(job_id=job_id, worker=self.request.hostname or "")


@shared_task(name="jobs_app.tasks.job_join", bind=True)
def job_join(self, job_id: str, token: str = "") -> None:
    """A gang's call for another node, as sent before gangs took their place in the queue's order: now
    the same as ``job_run`` (the worker walks the order, and joins the gang where it is first)."""
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    services.job_run(job_id=job_id, worker=self.request.hostname or "")


@shared_task(name="jobs_app.tasks.job_remote_run", bind=True)
def job_remote_run(self, job_id: str) -> None:
    if not FineTuneJob.objects.filter(pk=job_id).exists():
        return
    services.job_remote_run(job_id=job_id, worker=self.request.hostname or "")


@shared_task(name="jobs_app.tasks.job_remote_cancel")
def job_remote_cancel(job_id: str) -> None:
    services.job_remote_cancel(job_id=job_id)


@shared_task(name="jobs_app.tasks.jobs_reap")
def jobs_reap() -> dict:
    return services.jobs_reap()


@worker_ready.connect
def _advertise_devices(sender, **kwargs) -> None:
    """A worker that consumes the training queue registers its devices; one of other queues only (default,
    inference) trains nothing and registers nothing, so that it is not counted as a node for a job."""
    import os
    from dataclasses import asdict

    from django.conf import settings

    from workers.device import device_detect

    if settings.CELERY_TASK_ROUTES[job_run.name]["queue"] not in sender.app.amqp.queues.consume_from:
        return
    devices = {**asdict(device_detect()), "cpus": os.cpu_count() or 1}
    services.worker_register(name=sender.hostname, devices=devices)
    _liveness[sender.hostname] = services.WorkerLiveness(name=sender.hostname).start()


@worker_shutting_down.connect
def _release_jobs_on_shutdown(sender: str, **kwargs) -> None:
    """On SIGTERM the running job checkpoints and goes back to the queue instead of running on."""
    services.jobs_release_for_shutdown(worker=sender)
    liveness = _liveness.pop(sender, None)
    if liveness is not None:
        liveness.stop()  # before unregistering: a last beat must not register it again
    services.worker_unregister(name=sender)
