from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views import defaults
from django.views.decorators.cache import cache_control, never_cache
from django.views.decorators.http import require_POST
from prometheus_client import CollectorRegistry

from datasets_app.selectors import datasets_visible_to
from datasets_app.services import dataset_sample_create
from finetune_site import health, selectors
from finetune_site.api_errors import api_error_response, is_api_path
from finetune_site.errors import InvalidRequest
from finetune_site.metrics import BrokerQueuesCollector, metrics_allowed, metrics_response
from jobs_app.metrics import JobsCollector
from jobs_app.selectors import jobs_visible_to
from jobs_app.views import wizard_prefill
from models_app.base_models.selectors import base_model_for_stats
from models_app.selectors import fine_tuned_models_visible_to

# The tour's job: what makes the tiny model learn the sample in a few dozen steps (README: the main job).
SAMPLE_JOB = {"n_epochs": "8", "learning_rate": "0.003"}


@login_required
def home(request):
    """The dashboard: active jobs with progress, recent datasets and models, usage, workers."""
    return render(request, "finetune_site/dashboard.html", {
        "active": selectors.active_jobs_for(request.user),
        "datasets": datasets_visible_to(request.user)[:5],
        "models": fine_tuned_models_visible_to(request.user)[:5],
        "usage": selectors.usage_for(request.user),
        "tour": selectors.first_run_tour(request.user),
    })


@require_POST
@login_required
def tour_sample_dataset(request):
    """The first-run tour's step 1: upload the sample (train and validation) as any file is, then open
    the job wizard with both chosen and the options that make the tiny model learn it."""
    try:
        train, validation = dataset_sample_create(owner=request.user)
    except InvalidRequest as refused:
        messages.error(request, f"The sample dataset could not be made: {refused.message}")
        return redirect("home")
    base = base_model_for_stats()
    wizard_prefill(request, training_file=train.id, validation_file=validation.id, suffix="topics",
                   model=base.name if base else "", hyperparameters=SAMPLE_JOB)
    messages.success(request, f"Made {train.filename} ({train.row_count} rows) and {validation.filename} "
                              f"({validation.row_count} rows, to check the result). Next: the job.")
    return redirect(reverse("jobs:wizard_dataset") + "?" + urlencode({"dataset": train.id,
                                                                      "validation": validation.id}))


@login_required
def active_jobs(request):
    return render(request, "finetune_site/partials/active_jobs.html",
                  {"active": selectors.active_jobs_for(request.user)})


@login_required
def worker_status(request):
    status = selectors.workers_status()
    # Workers are shared: name only the jobs of the user's project, never another project's job id.
    running = [job for worker in status["workers"] for job in worker["jobs"]]
    own = set(jobs_visible_to(request.user).filter(pk__in=running).values_list("pk", flat=True))
    workers = [{**worker, "jobs": [job for job in worker["jobs"] if job in own]} for worker in status["workers"]]
    return render(request, "finetune_site/partials/worker_status.html", {"status": {**status, "workers": workers}})


@cache_control(max_age=86400, public=True)
def favicon(request):
    """No icon (the pages say so with a data: URL); the admin's pages make browsers ask anyway."""
    return HttpResponse(status=204)


def healthz(request):
    """Liveness: this process answers. It checks nothing else, so a database outage never restarts web."""
    return JsonResponse({"ok": True})


@never_cache
def readyz(request):
    """Readiness: database, Redis, storage and a worker per queue; 503 naming what is down."""
    result = health.readiness()
    return JsonResponse(result, status=200 if result["ok"] else 503)


# Read at scrape time from the database and the broker: the same numbers from every web process.
SHARED_METRICS = CollectorRegistry(auto_describe=False)
SHARED_METRICS.register(JobsCollector())
SHARED_METRICS.register(BrokerQueuesCollector())


@never_cache
def metrics(request):
    """Prometheus metrics: this process's (HTTP latency) and the database's (jobs, queues, workers)."""
    if not metrics_allowed(request):
        return HttpResponse("Set METRICS_TOKEN and send it as 'Authorization: Bearer <token>' (README: Monitoring).\n",
                            status=403, content_type="text/plain")
    return metrics_response(SHARED_METRICS)


def not_found(request, exception):
    if is_api_path(request.path):
        return api_error_response(f"Unknown URL: {request.method} {request.path}. The API's routes are listed at "
                                  "/v1/docs.", status=404, code="unknown_url")
    return defaults.page_not_found(request, exception)


def bad_request(request, exception):
    if is_api_path(request.path) and isinstance(exception, RequestDataTooBig):
        # Django refuses a JSON or form body over this before it is read whole (memory stays bounded).
        return api_error_response(
            f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes, the most a JSON or form "
            "body may hold (DATA_UPLOAD_MAX_MEMORY_SIZE); send training data as a file (POST /v1/files or "
            "/v1/datasets/uploads).", status=413, code="request_too_large")
    if is_api_path(request.path):
        # BadRequest carries our own words; other 400s (SuspiciousOperation) keep theirs to the log.
        message = str(exception) if type(exception) is BadRequest else "The request is malformed."
        return api_error_response(message, status=400, code="bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if is_api_path(request.path):
        return api_error_response(str(exception) or "You do not have permission to do this.", status=403,
                                  code="permission_denied")
    return defaults.permission_denied(request, exception)


def server_error(request):
    if is_api_path(request.path):
        return api_error_response("The server had an error while processing your request; it was logged.",
                                  status=500, code="server_error", type_="server_error")
    return defaults.server_error(request)
