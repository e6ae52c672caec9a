from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from jobs_app.selectors import job_last_metric
from models_app import selectors
from models_app.models import BaseModel


@login_required
def model_list(request):
    return render(request, "models_app/model_list.html", {
        "models": selectors.fine_tuned_models_visible_to(request.user)[:200],
        "base_models": BaseModel.objects.all(),
    })


@login_required
def model_detail(request, model_id: str):
    model = selectors.fine_tuned_model_get(request.user, model_id)
    return render(request, "models_app/model_detail.html", {
        "model": model,
        "job": model.job,
        "final_metrics": job_last_metric(model.job) or {},
        "download_url": reverse("model-download", args=[model.id]) + "?artifact=adapter",
    })
