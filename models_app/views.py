from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets_app.models import Dataset
from datasets_app.selectors import dataset_get, datasets_visible_to
from finetune_site.errors import InvalidRequest
from models_app import selectors, services
from models_app.base_models.selectors import base_models_usable_by
from models_app.cards import model_card_html, model_card_text
from models_app.forms import SIDES, CompletionFilterForm, EvaluationForm, PlaygroundForm, playground_initial
from models_app.models import Export
from models_app.playground import Pane, status_for


@login_required
def model_list(request):
    return render(request, "models_app/model_list.html", {
        "models": selectors.fine_tuned_models_visible_to(request.user)[:200],
        "base_models": base_models_usable_by(request.user),
        "names": selectors.registry_names(request.user),
    })


@login_required
def model_detail(request, model_id: str):
    model = selectors.fine_tuned_model_get(request.user, model_id)
    return render(request, "models_app/model_detail.html", _model_context(request, model))


def _model_context(request, model) -> dict:
    evaluations = list(model.evaluations.select_related("dataset")[:20])
    card = model_card_text(model)
    return {
        "model": model,
        "card": card,
        "card_html": model_card_html(card),
        "usage": selectors.model_usage(model),
        "job": model.job,
        "final_metrics": selectors.model_final_metrics(model),
        "download_url": reverse("model-download", args=[model.id]) + "?artifact=adapter",
        "aliases": sorted(a.alias for a in model.aliases.all()),
        "lineage": selectors.model_lineage(model),
        "exports": model.exports.all(),
        "evaluations": evaluations,
        "latest_evaluation": next((e for e in evaluations if e.status == "succeeded"), None),
        "datasets": datasets_visible_to(request.user).filter(status=Dataset.Status.READY)[:100],
        "quantizations": Export.Quantization.values,
        "actions": services.model_actions(model),
    }


@require_POST
@login_required
def model_classify(request, model_id: str):
    """The vision playground: an image in, the tuned model's classes beside its base's (or why none)."""
    model = selectors.fine_tuned_model_get(request.user, model_id)
    try:
        comparison = services.image_compare(user=request.user, model=model.id,
                                            image=services.image_read(request.FILES.get("image")))
        context = {"comparison": comparison}
    except InvalidRequest as refused:
        context = {"classify_error": refused.message}
    if request.htmx:
        return render(request, "models_app/partials/vision_predictions.html", context)
    return render(request, "models_app/model_detail.html", {**_model_context(request, model), **context})


@login_required
def registry_detail(request, name: str):
    versions = list(selectors.registry_versions(request.user, name))
    rows = [{"model": v, "aliases": sorted(a.alias for a in v.aliases.all()), "metrics": _auto_metrics(v)}
            for v in versions]
    aliases = sorted({alias for row in rows for alias in row["aliases"]})
    chart = {"labels": [r["model"].semver for r in reversed(rows)],
             "tuned": [r["metrics"].get("tuned", {}).get("eval_loss") for r in reversed(rows)],
             "base": [r["metrics"].get("base", {}).get("eval_loss") for r in reversed(rows)]}
    return render(request, "models_app/registry_detail.html", {
        "name": name, "rows": rows, "aliases": aliases, "chart": chart,
        "history": selectors.alias_history(request.user, name),
    })


def _auto_metrics(model) -> dict:
    evaluations = [e for e in model.evaluations.all() if e.status == "succeeded"]
    auto = [e for e in evaluations if e.kind == "auto"] or evaluations
    return auto[0].metrics if auto else {}


@login_required
def evaluation_detail(request, evaluation_id: str):
    evaluation = selectors.evaluation_get(request.user, evaluation_id)
    context = {"evaluation": evaluation, **selectors.evaluation_tables(evaluation)}
    if request.htmx:
        return render(request, "models_app/partials/evaluation_result.html", context)
    return render(request, "models_app/evaluation_detail.html", context)


# --- actions: each calls one service and comes back with what happened ------------------------


def _act(request, model_id: str, action, done: str):
    model = selectors.fine_tuned_model_get(request.user, model_id)
    try:
        action(model)
        messages.success(request, done.format(model=model))
    except InvalidRequest as refused:
        messages.error(request, refused.message)
    return redirect("models:detail", model_id=model.id)


@require_POST
@login_required
def model_promote(request, model_id: str):
    alias = request.POST.get("alias", "production").strip()
    return _act(request, model_id, lambda m: services.model_promote(model=m, alias=alias),
                "{model.reference} is now " + alias)


@require_POST
@login_required
def model_archive(request, model_id: str):
    archived = request.POST.get("archived", "1") == "1"
    return _act(request, model_id, lambda m: services.model_archive(model=m, archived=archived),
                "{model.reference} " + ("archived" if archived else "restored"))


@require_POST
@login_required
def model_export(request, model_id: str):
    kind, quantization = request.POST.get("kind", ""), request.POST.get("quantization") or None
    return _act(request, model_id, lambda m: services.export_create(model=m, kind=kind, quantization=quantization),
                "Export queued: it is offered once verified")


@require_POST
@login_required
def model_card_edit(request, model_id: str):
    card = request.POST.get("card", "")
    return _act(request, model_id, lambda m: services.model_card_edit(model=m, card=card),
                "Model card of {model.reference} saved")


@require_POST
@login_required
def model_delete(request, model_id: str):
    model = selectors.fine_tuned_model_get(request.user, model_id)
    try:
        services.fine_tuned_model_delete(model=model)
    except InvalidRequest as refused:
        messages.error(request, refused.message)
        return redirect("models:detail", model_id=model.id)
    messages.success(request, f"Deleted {model.reference} and its artifacts")
    return redirect("models:list")


@require_POST
@login_required
def model_evaluate(request, model_id: str):
    model = selectors.model_get(request.user, model_id)
    form = EvaluationForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Evaluation not started: {form.error_text()}")
        return redirect("models:detail", model_id=model_id)
    values = dict(form.cleaned_data)
    try:
        dataset = dataset_get(request.user, values.pop("file"))
        evaluation = services.evaluation_create(owner=request.user, model=model, dataset=dataset, **values)
    except InvalidRequest as refused:
        messages.error(request, f"Evaluation not started: {refused.message}")
        return redirect("models:detail", model_id=model_id)
    return redirect("models:evaluation", evaluation_id=evaluation.id)


@require_POST
@login_required
def registry_rollback(request, name: str):
    selectors.registry_versions(request.user, name)
    alias = request.POST.get("alias", "production")
    try:
        moved = services.alias_rollback(owner=request.user, name=name, alias=alias)
        messages.success(request, f"{name}@{alias} rolled back to {moved.model.semver}")
    except InvalidRequest as refused:
        messages.error(request, refused.message)
    return redirect("models:registry", name=name)



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


# --- the data loop: stored chat completions ---------------------------------------------------------

COMPLETIONS_SHOWN = 200


@login_required
def completion_list(request):
    form = CompletionFilterForm(request.GET or None)
    found = selectors.stored_completions_filtered(request.user, **(form.filters() if request.GET else {}))
    return render(request, "models_app/completion_list.html", {
        "form": form,
        "completions": list(found.order_by("-created_at", "-id").prefetch_related("datasets")[:COMPLETIONS_SHOWN]),
        "total": found.count(),
        "shown": COMPLETIONS_SHOWN,
        "models": sorted(set(selectors.stored_completions_visible_to(request.user).values_list("model", flat=True))),
        "retention_days": services.completion_retention_days(request.user),
    })


@require_POST
@login_required
def completion_feedback(request, completion_id: str):
    completion = selectors.stored_completion_get(request.user, completion_id)
    changes = {}
    if "rating" in request.POST:
        changes["rating"] = request.POST["rating"] or None
    if "correction" in request.POST:
        changes["correction"] = request.POST["correction"]
    error = None
    try:
        completion = services.stored_completion_feedback(completion=completion, **changes)
    except InvalidRequest as refused:
        error = refused.message
    if request.htmx:
        return render(request, "models_app/partials/completion_row.html", {"completion": completion, "error": error},
                      status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("models:completions") + f"#{completion.id}")


@require_POST
@login_required
def completions_dataset(request):
    try:
        dataset = services.completions_dataset_create(owner=request.user,
                                                      completion_ids=request.POST.getlist("completion"),
                                                      filename=request.POST.get("filename", ""))
    except InvalidRequest as refused:
        messages.error(request, f"No dataset made: {refused.message}")
        return redirect("models:completions")
    messages.success(request, f"{dataset.filename}: {dataset.row_count} conversations")
    return redirect("datasets:detail", file_id=dataset.id)


@require_POST
@login_required
def completions_import(request):
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise InvalidRequest("choose a JSONL file to import", param="file")
        made = services.completions_import(owner=request.user, lines=upload.open("rb"))
    except InvalidRequest as refused:
        messages.error(request, f"Nothing imported: {refused.message}")
    else:
        messages.success(request, f"Imported {len(made)} conversations")
    return redirect("models:completions")


@require_POST
@login_required
def completion_settings(request):
    raw = request.POST.get("retention_days", "")
    try:
        services.completion_settings_update(owner=request.user, retention_days=int(raw) if raw.isdigit() else raw)
    except InvalidRequest as refused:
        messages.error(request, refused.message)
    else:
        messages.success(request, "Retention saved")
    return redirect("models:completions")
