from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from finetune_site.errors import InvalidRequest
from jobs_app.selectors import job_last_metric
from models_app import selectors, services
from models_app.forms import SIDES, PlaygroundForm, playground_initial
from models_app.models import BaseModel
from models_app.playground import Pane, status_for


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


@login_required
def playground(request):
    if request.method == "POST":  # without JavaScript: both replies, whole, in the page
        form = PlaygroundForm(request.POST, user=request.user)
        panes = _playground_run(form) if form.is_valid() else [Pane(side) for side in SIDES]
    else:
        initial = playground_initial(request.user, request.GET.get("model"))
        form = PlaygroundForm(user=request.user, initial=initial)
        panes = [Pane(side, model_id=initial.get(f"{side}_model", "")) for side in SIDES]
    return render(request, "models_app/playground.html", {"form": form, "panes": panes})


def _playground_run(form: PlaygroundForm) -> list[Pane]:
    panes = []
    for side, model in form.models().items():
        pane = Pane(side, model_id=selectors.model_public_id(model))
        try:
            channel, _ = services.chat_completion_start(model=model, config=form.generate_config())
            done = services.chat_completion_finish(reply_channel=channel)
            pane.text = done["text"]
            pane.state, pane.status = status_for(done)
        except InvalidRequest as exc:
            pane.state, pane.status = "error", f"Error: {exc.message}"
        panes.append(pane)
    return panes
