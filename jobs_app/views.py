import json
import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_POST

from datasets_app.models import VISION_PURPOSE, Dataset
from datasets_app.selectors import dataset_dry_run, dataset_preview, dataset_rows, datasets_visible_to
from datasets_app.services import token_stats_request
from finetune_site.errors import Conflict, InvalidRequest
from jobs_app import selectors, services
from jobs_app.forms import (
    FIELD_NAMES,
    DatasetStepForm,
    ModelStepForm,
    hyperparameter_error,
    hyperparameters_errors,
    hyperparameters_from_texts,
    review_rows,
    wizard_fields,
    wizard_integrations,
)
from jobs_app.live import job_detail_context, job_status_context
from jobs_app.models import FineTuneJob
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import base_models_training, base_models_usable_by
from workers.hyperparameters import AUTO, GRADED_OBJECTIVES

log = logging.getLogger(__name__)
GRADER_TRY_ROWS = 3  # the wizard's grader dry run
PAGE_SIZE = 50
WIZARD = "job_wizard"


@login_required
def job_list(request):
    jobs = selectors.jobs_visible_to(request.user)
    status = request.GET.get("status", "")
    if status in FineTuneJob.Status.values:
        jobs = jobs.filter(status=status)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "status": status, "statuses": FineTuneJob.Status.values}
    # A history restore (back button after hx-push-url) needs the whole page, not the fragment.
    partial = request.htmx and not request.htmx.history_restore_request
    template = "jobs_app/partials/job_table.html" if partial else "jobs_app/job_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ["HX-Request"])
    return response


@login_required
def job_detail(request, job_id: str):
    job = selectors.job_get(request.user, job_id)
    return render(request, "jobs_app/job_detail.html", job_detail_context(job))


def _job_action(request, job_id: str, action):
    """Cancel, pause or resume through the service; the status partial shows the outcome."""
    job = selectors.job_get(request.user, job_id)
    error = ""
    try:
        job = action(job=job)
    except Conflict as refused:
        error = refused.message
    if request.htmx:
        return render(request, "jobs_app/partials/job_status.html", {**job_status_context(job), "cancel_error": error})
    if error:
        messages.error(request, error)
    return redirect("jobs:detail", job_id=job.id)


@require_POST
@login_required
def job_cancel(request, job_id: str):
    return _job_action(request, job_id, services.job_cancel)


@require_POST
@login_required
def job_pause(request, job_id: str):
    return _job_action(request, job_id, services.job_pause)


@require_POST
@login_required
def job_resume(request, job_id: str):
    return _job_action(request, job_id, services.job_resume)


# --- The wizard: dataset → model and hyperparameters → review. State lives in the session. ---


def wizard_prefill(request, **values) -> None:
    """Start the wizard with these answers (the first-run tour's sample job); each step shows them."""
    request.session[WIZARD] = values


def _wizard(request) -> dict:
    return request.session.get(WIZARD) or {}


def _wizard_save(request, **values) -> dict:
    state = {**_wizard(request), **values}
    request.session[WIZARD] = state
    return state


def _ready_datasets(user):
    # vision datasets are trained by the vision strategies, not by these language-model jobs
    return datasets_visible_to(user).filter(status=Dataset.Status.READY).exclude(purpose=VISION_PURPOSE).only(
        "id", "filename", "row_count", "byte_size", "created_at")


@login_required
def wizard_dataset(request):
    datasets = list(_ready_datasets(request.user)[:200])
    state = _wizard(request)
    if request.method == "POST":
        form = DatasetStepForm(request.POST, datasets=datasets)
        if form.is_valid():
            _wizard_save(request, training_file=form.cleaned_data["training_file"],
                         validation_file=form.cleaned_data["validation_file"] or "")
            return redirect("jobs:wizard_model")
    else:
        # ?dataset= (and ?validation=) preselect: the links from a dataset's page and the first-run tour
        initial = {"training_file": request.GET.get("dataset") or state.get("training_file"),
                   "validation_file": request.GET.get("validation") or state.get("validation_file", "")}
        form = DatasetStepForm(initial=initial, datasets=datasets)
    return render(request, "jobs_app/wizard_dataset.html", {"form": form, "step": 1, "datasets": datasets})


def _wizard_dataset(request) -> Dataset | None:
    file_id = _wizard(request).get("training_file")
    return datasets_visible_to(request.user).filter(pk=file_id).first() if file_id else None


def _base_model(user, name: str | None) -> BaseModel | None:
    return base_models_usable_by(user).filter(name=name).first() if name else None


def _objective(state: dict) -> str:
    return state.get("objective") or FineTuneJob.Objective.SUPERVISED


@login_required
def wizard_model(request):
    dataset = _wizard_dataset(request)
    if dataset is None:
        return redirect("jobs:wizard_dataset")
    base_models = list(base_models_training(request.user, images=dataset.is_vision))
    state = _wizard(request)
    texts = dict(state.get("hyperparameters") or {})
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = ModelStepForm(request.POST, base_models=base_models, dataset=dataset, owner=request.user)
        texts = {name: request.POST.get(name, AUTO).strip() for name in FIELD_NAMES}  # a field not sent is auto
        state = _wizard_save(request, hyperparameters=texts, model=request.POST.get("model"),
                             suffix=request.POST.get("suffix", ""), objective=request.POST.get("objective", ""),
                             grader=request.POST.get("grader", ""), version=request.POST.get("version", "").strip(),
                             trackers=request.POST.getlist("trackers"),
                             wandb_project=request.POST.get("wandb_project", ""),
                             mlflow_experiment=request.POST.get("mlflow_experiment", ""))
        if form.is_valid():
            base = _base_model(request.user, form.cleaned_data["model"])
            errors = hyperparameters_errors(texts, base_model=base, rows=dataset.row_count, objective=_objective(state),
                                            has_validation=bool(state.get("validation_file")))
            if not errors:
                validation = datasets_visible_to(request.user).filter(pk=state.get("validation_file") or "").first()
                _stats_ask(list(filter(None, [dataset, validation])), base, texts)
                return redirect("jobs:wizard_review")
    else:
        form = ModelStepForm(initial={"model": state.get("model"), "adapter": texts.get("adapter", "lora"),
                                      "objective": _objective(state), "suffix": state.get("suffix", ""),
                                      "grader": state.get("grader", ""), "version": state.get("version", ""),
                                      "trackers": state.get("trackers", []),
                                      "wandb_project": state.get("wandb_project", ""),
                                      "mlflow_experiment": state.get("mlflow_experiment", "")},
                             base_models=base_models, dataset=dataset)
    fields = wizard_fields(texts, errors)
    return render(request, "jobs_app/wizard_model.html", {
        "form": form, "step": 2, "dataset": dataset, "fields": fields,
        "open_advanced": any(f["value"] not in ("", "auto") or f["error"] for f in fields),
        "adapter_error": errors.get("adapter", ""), "form_error": errors.get("__all__", ""),
        "grader_try_rows": GRADER_TRY_ROWS,
    })


def _stats_ask(datasets: list[Dataset], base: BaseModel, texts: dict) -> None:
    """The review's estimate counts tokens with this model and template: ask for them now (a write path)."""
    template = hyperparameters_from_texts({"template": texts.get("template", "")}).get("template", "")
    for dataset in datasets:
        if not dataset.training_format:
            continue
        try:
            token_stats_request(dataset=dataset, base_model=base, template=template)
        except (Conflict, InvalidRequest):
            log.info("no token statistics for %s with %s", dataset.id, base.name)


@require_POST
@login_required
def wizard_field(request, name: str):
    """Inline check of one advanced field as the user types, with the API's own validation."""
    if name not in FIELD_NAMES:
        raise Http404(name)
    dataset = _wizard_dataset(request)
    text = request.POST.get(name, "")
    state = _wizard(request)
    # htmx sends the whole form with the check, and the check saves all of it, as Next does. A check
    # fired by leaving a field as Next is clicked can finish after Next and write back the session
    # it loaded earlier (sessions are saved whole); saving only this field would drop the model.
    texts = {**(state.get("hyperparameters") or {}),
             **{n: request.POST[n].strip() for n in FIELD_NAMES if n in request.POST}}
    step = {key: request.POST[key] for key in ("model", "suffix", "objective") if key in request.POST}
    state = _wizard_save(request, hyperparameters=texts, **step)
    base = _base_model(request.user, request.POST.get("model"))
    if base is None:
        error = "Choose a base model first."
    else:
        error = hyperparameter_error(name, text, base_model=base, rows=dataset.row_count if dataset else 0,
                                     objective=_objective(state), has_validation=bool(state.get("validation_file")))
    return render(request, "jobs_app/partials/field_error.html", {"name": name, "error": error})


@login_required
@require_POST
def wizard_grader_try(request):
    """The grader typed in the model step, run on the first rows of the training file with a sample
    answer (the API's dry run, ``grader_run``): the rewards a job would give, before any compute."""
    dataset = _wizard_dataset(request)
    sample = request.POST.get("grader_sample", "")
    results, error = [], ""
    try:
        rows = dataset_rows(dataset, limit=GRADER_TRY_ROWS) if dataset else []
        results = services.grader_try(owner=request.user, grader=json.loads(request.POST.get("grader") or "null"),
                                      model_sample=sample, rows=rows)
    except json.JSONDecodeError as exc:
        error = f"The grader is not JSON ({exc})."
    except InvalidRequest as refused:
        error = f"{refused.param}: {refused.message}" if refused.param else refused.message
    return render(request, "jobs_app/partials/grader_try.html", {"results": results, "error": error,
                                                                 "sample": sample})


@login_required
def wizard_review(request):
    dataset = _wizard_dataset(request)
    state = _wizard(request)
    if dataset is None or "hyperparameters" not in state:
        return redirect("jobs:wizard_dataset")
    base = _base_model(request.user, state.get("model"))
    if base is None:  # e.g. the model was removed since step 2
        return redirect("jobs:wizard_model")
    raw = hyperparameters_from_texts(state["hyperparameters"])
    validation_id = state.get("validation_file") or None
    objective = _objective(state)
    error = None
    if request.method == "POST":
        try:
            job = services.job_create(owner=request.user, training_file=dataset.id, model=base.name,
                                      validation_file=validation_id, hyperparameters=raw, objective=objective,
                                      suffix=state.get("suffix", ""), grader=_grader(state, objective),
                                      provider=request.POST.get("provider") or "local",
                                      version=state.get("version", ""), integrations=_integrations(state))
        except InvalidRequest as problem:
            error = problem
        else:
            request.session.pop(WIZARD, None)
            return redirect("jobs:detail", job_id=job.id)
    try:
        resolved = services.job_hyperparameters_resolve(raw, objective=objective, base_model=base,
                                                        rows=dataset.row_count, has_validation=bool(validation_id))
    except InvalidRequest:
        return redirect("jobs:wizard_model")
    try:  # what job_create will do: savers left to auto turned on where they make it fit, or the refusal
        resolved = services.job_fit_check(resolved, base_model=base, param=services.hyperparameters_param(objective))
    except InvalidRequest as problem:
        error = error or problem
    validation = datasets_visible_to(request.user).filter(pk=validation_id).first() if validation_id else None
    estimate = services.job_estimate_draft(owner=request.user, dataset=dataset, base_model=base,
                                           hyperparameters=resolved, validation=validation, objective=objective)
    costs = services.provider_costs(owner=request.user, model=base.name, estimate=estimate,
                                    devices=resolved.get("devices", 1))
    return render(request, "jobs_app/wizard_review.html", {
        "step": 3, "dataset": dataset, "base_model": base, "suffix": state.get("suffix", ""),
        "model_name": services.job_model_name(suffix=state.get("suffix", ""), base_model=base),
        "version": state.get("version", ""),
        "objective": objective, "adapter": resolved["adapter"], "options": review_rows(resolved, objective=objective),
        "grader": json.dumps(grader) if (grader := _grader(state, objective)) else "",
        "integrations": _integrations(state),
        "resolved": resolved, "validation": validation,
        "estimate": estimate, "costs": costs,
        "dry_run": _dry_run(dataset, base, resolved),
        "mask_rows": dataset_preview(dataset, rows=2),
        "error": error,
    })


def _integrations(state: dict) -> list[dict]:
    """The trackers ticked in the model step (checked there), as the API's ``integrations``."""
    return wizard_integrations(state.get("trackers") or [], wandb_project=state.get("wandb_project", ""),
                               mlflow_experiment=state.get("mlflow_experiment", ""))


def _grader(state: dict, objective: str) -> dict | None:
    """The grader typed in the model step (checked there), for a reinforcement job only."""
    text = state.get("grader") or ""
    return json.loads(text) if text.strip() and objective in GRADED_OBJECTIVES else None


def _dry_run(dataset: Dataset, base: BaseModel, resolved: dict) -> dict | None:
    """The first rows tokenized as the trainer will (the job's template), with the tokens that carry
    loss; None when they cannot be shown (preference pairs, a tokenizer that does not load): the page
    then marks whole turns instead."""
    if not dataset.training_format:
        return None
    try:
        return dataset_dry_run(dataset, base_model=base, template=resolved.get("template", ""),
                               max_length=resolved["max_length"], rows=2)
    except Exception:
        log.warning("dry run of %s with %s failed", dataset.id, base.name, exc_info=True)
        return None


@login_required
def job_misclassified_thumbnail(request, job_id: str, index: int):
    """The thumbnail of a vision job's misclassified held-out image (members of the job's project only)."""
    job = selectors.job_get(request.user, job_id)
    try:
        thumbnail = default_storage.open(selectors.job_misclassified_thumbnail(job, index), "rb")
    except FileNotFoundError:
        raise Http404(f"The thumbnail of misclassified image {index} is gone from storage") from None
    response = FileResponse(thumbnail, content_type="image/jpeg")
    response["Cache-Control"] = "private, max-age=3600"
    return response
