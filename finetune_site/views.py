from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from datasets_app.selectors import datasets_visible_to
from finetune_site import selectors
from jobs_app.models import FineTuneJob
from models_app.selectors import fine_tuned_models_visible_to


@login_required
def home(request):
    """The dashboard: active jobs with progress, recent datasets and models, usage, workers."""
    return render(request, "finetune_site/dashboard.html", {
        "active": selectors.active_jobs_for(request.user),
        "datasets": datasets_visible_to(request.user)[:5],
        "models": fine_tuned_models_visible_to(request.user)[:5],
        "usage": selectors.usage_for(request.user),
    })


@login_required
def active_jobs(request):
    return render(request, "finetune_site/partials/active_jobs.html",
                  {"active": selectors.active_jobs_for(request.user)})


@login_required
def worker_status(request):
    status = selectors.workers_status()
    # Workers are shared: name only the user's own jobs, never another user's job id.
    running = [job for worker in status["workers"] for job in worker["jobs"]]
    own = set(FineTuneJob.objects.filter(owner=request.user, pk__in=running).values_list("pk", flat=True))
    workers = [{**worker, "jobs": [job for job in worker["jobs"] if job in own]} for worker in status["workers"]]
    return render(request, "finetune_site/partials/worker_status.html", {"status": {**status, "workers": workers}})
