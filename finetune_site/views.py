from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from datasets_app.selectors import datasets_visible_to
from finetune_site import selectors
from jobs_app.models import FineTuneJob
from jobs_app.selectors import job_progress, jobs_active_for
from models_app.selectors import fine_tuned_models_visible_to


def _active_jobs(user) -> list[dict]:
    return [{"job": job, "progress": job_progress(
        job, job.last_metric, first=(job.first_metric, job.first_metric_at) if job.first_metric else None)}
        for job in jobs_active_for(user)]


@login_required
def home(request):
    """The dashboard: active jobs with progress, recent datasets and models, usage, workers."""
    return render(request, "finetune_site/dashboard.html", {
        "active": _active_jobs(request.user),
        "datasets": datasets_visible_to(request.user)[:5],
        "models": fine_tuned_models_visible_to(request.user)[:5],
        "usage": selectors.usage_for(request.user),
    })


@login_required
def active_jobs(request):
    return render(request, "finetune_site/partials/active_jobs.html", {"active": _active_jobs(request.user)})


@login_required
def worker_status(request):
    status = selectors.workers_status()
    # Workers are shared: name only the user's own jobs, never another user's job id.
    running = [job for worker in status["workers"] for job in worker["jobs"]]
    own = set(FineTuneJob.objects.filter(owner=request.user, pk__in=running).values_list("pk", flat=True))
    workers = [{**worker, "jobs": [job for job in worker["jobs"] if job in own]} for worker in status["workers"]]
    return render(request, "finetune_site/partials/worker_status.html", {"status": {**status, "workers": workers}})
