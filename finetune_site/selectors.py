"""Reads the dashboard needs across apps: usage and the workers' status."""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from accounts_app.selectors import project_acting
from datasets_app.models import Dataset
from datasets_app.services.uploads import SAMPLE_FILES
from jobs_app.models import FineTuneJob
from jobs_app.selectors import job_progress, jobs_active_for
from models_app.models import FineTunedModel

log = logging.getLogger(__name__)
WORKERS_CACHE_KEY = "dashboard:workers"


def active_jobs_for(user) -> list[dict]:
    """The user's running and queued jobs with their progress: the dashboard's live list."""
    return [{"job": job, "progress": job_progress(
        job, job.last_metric, first=(job.first_metric, job.first_metric_at) if job.first_metric else None)}
        for job in jobs_active_for(user)]


def first_run_tour(user) -> dict | None:
    """The dashboard's three steps (a dataset → a job → the playground) for a user without a fine-tuned
    model yet, with where each stands; None once they have one."""
    project = project_acting(user)
    if FineTunedModel.objects.filter(project=project).exists():
        return None
    ready = Dataset.objects.filter(project=project, status=Dataset.Status.READY)
    sample = ready.filter(filename=SAMPLE_FILES[0][0]).order_by("-created_at").first()
    validation = ready.filter(filename=SAMPLE_FILES[1][0]).order_by("-created_at").first() if sample else None
    return {"dataset": sample or ready.order_by("-created_at").first(), "validation": validation,
            "job": FineTuneJob.objects.filter(project=project).order_by("-created_at").first()}


def usage_for(user) -> dict:
    """Tokens trained and training hours on GPU and CPU of the user's project (finished runs, plus running
    ones up to now)."""
    jobs = FineTuneJob.objects.filter(project=project_acting(user), started_at__isnull=False)
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    on_gpu = Q(metrics__device="cuda")
    finished = jobs.filter(finished_at__isnull=False).aggregate(
        tokens=Sum("trained_tokens"), total=Sum(duration), gpu=Sum(duration, filter=on_gpu))
    now = timezone.now()
    gpu_time = finished["gpu"] or timedelta()
    hours = {"gpu": gpu_time, "cpu": (finished["total"] or timedelta()) - gpu_time}
    running = jobs.filter(finished_at__isnull=True, status=FineTuneJob.Status.RUNNING)
    for start, metrics in running.values_list("started_at", "metrics"):
        hours["gpu" if metrics.get("device") == "cuda" else "cpu"] += now - start
    gpu, cpu = (hours[kind].total_seconds() / 3600 for kind in ("gpu", "cpu"))
    return {"tokens": finished["tokens"] or 0, "hours": gpu + cpu, "gpu_hours": gpu, "cpu_hours": cpu,
            "jobs": FineTuneJob.objects.filter(project=project_acting(user)).count()}


def workers_status() -> dict:
    """Which Celery workers answer, and what each is running; cached briefly, never raises.

    A missing broker or a slow worker must not break the dashboard: the answer is then
    ``{"ok": False, "workers": []}`` with the reason.
    """
    try:
        cached = cache.get(WORKERS_CACHE_KEY)
    except Exception:  # the cache is the same Redis as the broker: it may be down too
        cached = None
    if cached is not None:
        return cached
    status = _workers_inspect()
    try:
        cache.set(WORKERS_CACHE_KEY, status, settings.WORKER_STATUS_CACHE_SECONDS)
    except Exception:
        pass
    return status


def _workers_inspect() -> dict:
    from finetune_site.celery import app

    try:
        replies = app.control.broadcast("worker_status", reply=True, timeout=0.5) or []
    except Exception as error:
        log.info("worker status unavailable: %s", error)
        return {"ok": False, "error": f"broker unreachable ({type(error).__name__})", "workers": []}
    workers = []
    for reply in replies:
        for name, answer in reply.items():
            answer = answer if isinstance(answer, dict) and "active" in answer else {"active": []}
            tasks = answer["active"]
            jobs = [task["args"][0] for task in tasks if task.get("name") == "jobs_app.tasks.job_run" and task["args"]]
            workers.append({"name": name, "device": answer.get("device", "unknown"), "busy": bool(tasks),
                            "tasks": len(tasks), "jobs": jobs})
    workers.sort(key=lambda worker: worker["name"])
    return {"ok": True, "error": "", "workers": workers, "checked_at": timezone.now().isoformat()}
