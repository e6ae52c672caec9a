"""Reads of models shared by views and the API."""

import re
from datetime import datetime

from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.http import Http404
from django.utils import timezone

from accounts_app.selectors import project_acting
from finetune_site.errors import InvalidRequest
from finetune_site.semver import semver_parse
from jobs_app.models import Checkpoint, FineTuneJob
from jobs_app.selectors import checkpoint_find, job_last_metric
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import (
    base_model_remote_problem,
    base_models_usable_by,
    base_models_visible_to,
    usage_summary,
)
from models_app.models import (
    AliasChange,
    Evaluation,
    Export,
    FineTunedModel,
    ModelAlias,
    ModelUsage,
    StoredCompletion,
    UsageSample,
)


def fine_tuned_models_visible_to(user) -> QuerySet[FineTunedModel]:
    """The fine-tuned models of the project ``user`` acts in."""
    return (FineTunedModel.objects.filter(project=project_acting(user)).select_related("base_model", "job")
            .prefetch_related("exports", "aliases"))


def model_get(user, model_id: str) -> BaseModel | FineTunedModel:
    """A base model the user may use (shared or their own, ready) or the user's fine-tuned model, else 404.

    Fine-tuned models are named by id, or through the registry as ``name@alias`` (e.g.
    ``support-bot@production``), ``name@1.4.0``, ``name@1.4``, ``name@^1`` or ``name@vN``
    (``fine_tuned_model_find``).
    """
    found = fine_tuned_model_find(user, model_id) or base_models_usable_by(user).filter(name=model_id).first()
    if found is None:
        remote_model_refuse(user, model_id)
        raise Http404(f"No such model: {model_id}")
    return found


def remote_model_refuse(user, model_id: str) -> None:
    """A 400 naming ``model`` when ``model_id`` lives at a remote provider: the model one of ``user``'s
    jobs made there (its ``fine_tuned_model``), or a provider's base model a job named; nothing else."""
    job = (FineTuneJob.objects.filter(project=project_acting(user), remote_model=model_id)
           .select_related("provider").first())
    if job is not None:
        raise InvalidRequest(f"{model_id!r} was made by job {job.id} on provider {job.provider.name} and lives there, "
                             f"not here: use it through the provider ({job.provider.base_url})", param="model",
                             code="model_is_remote")
    base = base_models_visible_to(user).filter(name=model_id).first()
    if base is not None and base.is_remote:
        raise InvalidRequest(base_model_remote_problem(base), param="model", code="model_is_remote")


def chat_model_get(user, model_id: str) -> BaseModel | FineTunedModel | Checkpoint:
    """What chat can answer with: a model (``model_get``) or one of the user's checkpoints, by id
    (``ftckpt-…``) or by name (``ft:…:ckpt-step-N``); else 404."""
    found = checkpoint_find(model_id, owner=user)
    return found or model_get(user, model_id)


def model_public_id(model: BaseModel | FineTunedModel | Checkpoint) -> str:
    """The id callers name ``model`` by: a base model's name, a fine-tuned model's id, a checkpoint's
    ``fine_tuned_model_checkpoint``."""
    if isinstance(model, Checkpoint):
        return model.fine_tuned_model_checkpoint
    return model.name if isinstance(model, BaseModel) else model.id


def fine_tuned_model_get(user, model_id: str) -> FineTunedModel:
    found = fine_tuned_model_find(user, model_id)
    if found is None:
        raise Http404(f"No such fine-tuned model: {model_id}")
    return found


def fine_tuned_model_find(user, reference: str) -> FineTunedModel | None:
    """The user's fine-tuned model named by id or through the registry, else None: ``name@1.4.0`` (that
    version), ``name@1.4`` (the newest 1.4.x), ``name@^1`` or ``name@1`` (the newest 1.x.y; ``^1.4``:
    the newest 1.x.y from 1.4.0 on), ``name@vN`` (the N-th made) or ``name@alias``. Ranges skip archived
    versions; exact versions do not."""
    models = fine_tuned_models_visible_to(user)
    found = models.filter(pk=reference).first()
    if found or "@" not in reference:
        return found
    name, tag = reference.rsplit("@", 1)
    if re.fullmatch(r"v\d+", tag):
        return models.filter(name=name, version=int(tag[1:])).first()
    if semver_parse(tag):
        major, minor, patch = semver_parse(tag)
        return models.filter(name=name, major=major, minor=minor, patch=patch).first()
    match = VERSION_RANGE.fullmatch(tag)
    if match:
        return _version_range_newest(models.filter(name=name, archived_at__isnull=True), match)
    return models.filter(aliases__name=name, aliases__alias=tag, aliases__project=project_acting(user)).first()


# ``1.4`` (any patch of 1.4), ``1`` or ``^1`` (any 1.x.y), ``^1.4`` and ``^1.4.2`` (1.x.y from there on).
VERSION_RANGE = re.compile(r"(?P<caret>\^)?(?P<major>0|[1-9]\d{0,8})(?:\.(?P<minor>0|[1-9]\d{0,8})"
                           r"(?:\.(?P<patch>0|[1-9]\d{0,8}))?)?")


def _version_range_newest(versions: QuerySet[FineTunedModel], match: re.Match) -> FineTunedModel | None:
    major, minor, patch = (int(match[part]) if match[part] else None for part in ("major", "minor", "patch"))
    versions = versions.filter(major=major)
    if match["caret"]:
        floor = Q(minor__gt=minor or 0) | Q(minor=minor or 0, patch__gte=patch or 0)
        versions = versions.filter(floor)
    elif minor is not None:  # 1.4 (1.4.2 without a caret is exact, handled before)
        versions = versions.filter(minor=minor)
    return versions.order_by("-major", "-minor", "-patch").first()


def model_usage(model: FineTunedModel) -> dict:
    """Chat usage of a version (``usage_summary``)."""
    return usage_summary(totals=ModelUsage, samples=UsageSample, key={"model": model})


def model_final_metrics(model: FineTunedModel) -> dict:
    """The job's last logged step (loss, learning rate, ...) and its run summary (wall time, tokens/s,
    peak memory); the run's mean loss keeps its own name next to the last step's."""
    summary = dict(model.job.metrics or {})
    if "train_loss" in summary:
        summary["mean_train_loss"] = summary.pop("train_loss")
    return {**(job_last_metric(model.job) or {}), **summary}


def registry_names(user) -> list[dict]:
    """Each model name of the user with its version count, newest version and aliases."""
    names: dict[str, dict] = {}
    for model in fine_tuned_models_visible_to(user).order_by("name", "-version")[:2000]:
        entry = names.setdefault(model.name, {"name": model.name, "latest": model, "versions": 0, "aliases": {}})
        entry["versions"] += 1
    for alias in ModelAlias.objects.filter(project=project_acting(user)).select_related("model"):
        if alias.name in names:
            names[alias.name]["aliases"][alias.alias] = alias.model
    return list(names.values())


def registry_versions(user, name: str) -> QuerySet[FineTunedModel]:
    """The versions of one model name, newest first; 404 when the user has none."""
    versions = fine_tuned_models_visible_to(user).filter(name=name).prefetch_related("aliases", "evaluations")
    if not versions.exists():
        raise Http404(f"No model named {name}")
    return versions.order_by("-version")


def alias_history(user, name: str) -> QuerySet[AliasChange]:
    return AliasChange.objects.filter(project=project_acting(user), name=name).select_related("model", "previous")[:100]


def evaluations_visible_to(user) -> QuerySet[Evaluation]:
    return Evaluation.objects.filter(project=project_acting(user)).select_related("model", "base_model", "dataset")


def evaluation_get(user, evaluation_id: str) -> Evaluation:
    found = evaluations_visible_to(user).filter(pk=evaluation_id).first()
    if found is None:
        raise Http404(f"No such evaluation: {evaluation_id}")
    return found


def model_lineage(model: FineTunedModel) -> dict:
    """Where a version came from and what was made of it: dataset versions (and an RLAIF job's judged
    pairs) → job → checkpoint → version → exports (and the evaluations of it)."""
    job = model.job
    return {
        "dataset": _dataset_lineage(job.dataset),
        "validation_dataset": _dataset_lineage(job.validation_dataset) if job.validation_dataset else None,
        # rlaif: the pairs its judge ranked (a version of the prompts above), which DPO trained on
        "preference_dataset": _dataset_lineage(job.preference_dataset) if job.preference_dataset else None,
        "job": {"id": job.id, "status": job.status, "objective": job.objective, "base_model": job.base_model.name,
                "hyperparameters": job.hyperparameters, "seed": job.seed, "attempts": job.attempt,
                "trained_tokens": job.trained_tokens},
        "checkpoint": _checkpoint_lineage(model.checkpoint),
        "best_checkpoint": _checkpoint_lineage(job.checkpoints.filter(is_best=True).first()),
        "version": {"id": model.id, "name": model.name, "version": model.semver, "version_number": model.version,
                    "aliases": sorted(a.alias for a in model.aliases.all()),
                    "archived": model.archived_at is not None, "promotion": model.promotion or None},
        "exports": [{"id": e.id, "artifact": e.artifact, "status": e.status} for e in model.exports.all()],
        "evaluations": [e.id for e in model.evaluations.all()],
    }


def _dataset_lineage(dataset) -> dict:
    """The dataset and its ancestors, oldest last, each with the operations that made it."""
    chain, seen = [], set()
    while dataset is not None and dataset.id not in seen:
        seen.add(dataset.id)
        chain.append({"id": dataset.id, "filename": dataset.filename, "sha256": dataset.sha256,
                      "rows": dataset.row_count, "operations": dataset.operations})
        dataset = dataset.parent
    return {**chain[0], "parents": chain[1:]}


def _checkpoint_lineage(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    return {"id": checkpoint.id, "step": checkpoint.step, "is_best": checkpoint.is_best,
            "metrics": checkpoint.metrics}


def exports_visible_to(user) -> QuerySet[Export]:
    project = project_acting(user)
    return (Export.objects.filter(Q(model__project=project) | Q(checkpoint__job__project=project))
            .select_related("model", "checkpoint__job__base_model"))


def export_source_get(user, model_id: str) -> FineTunedModel | Checkpoint:
    """What can be exported: one of the user's fine-tuned models (``fine_tuned_model_get``) or checkpoints,
    named as chat names them (``ftckpt-…`` or ``ft:…:ckpt-step-N``); a model at a remote provider is a 400
    (``remote_model_refuse``); else 404."""
    found = checkpoint_find(model_id, owner=user) or fine_tuned_model_find(user, model_id)
    if found is None:
        remote_model_refuse(user, model_id)
        raise Http404(f"No such fine-tuned model: {model_id}")
    return found


def export_get(user, export_id: str) -> Export:
    found = exports_visible_to(user).filter(pk=export_id).first()
    if found is None:
        raise Http404(f"No such export: {export_id}")
    return found


# What the evaluation tables call each metric, and the decimals its values keep.
EVALUATION_METRICS = {
    "eval_loss": ("validation loss", 4), "perplexity": ("perplexity", 2), "bleu": ("BLEU (0–100)", 1),
    "rouge1": ("ROUGE-1", 3), "rouge2": ("ROUGE-2", 3), "rougeL": ("ROUGE-L", 3), "exact_match": ("exact match", 3),
    "accuracy": ("accuracy", 3),
}


def _metric_text(value, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def evaluation_tables(evaluation) -> dict:
    """Metric rows (one value per target, and the tuned model's change over its base) and chart data."""
    from workers.evaluation import LOWER_IS_BETTER, METRICS

    targets = list(evaluation.metrics)
    table = []
    for metric in METRICS:
        values = [evaluation.metrics[t].get(metric) for t in targets]
        if all(v is None for v in values):
            continue
        base, tuned = evaluation.metrics.get("base", {}).get(metric), evaluation.metrics.get("tuned", {}).get(metric)
        delta = None if base is None or tuned is None else tuned - base
        better = None if delta is None or delta == 0 else (delta < 0) == (metric in LOWER_IS_BETTER)
        label, digits = EVALUATION_METRICS.get(metric, (metric, 4))
        table.append({"metric": metric, "label": label, "values": values, "delta": delta, "better": better,
                      "texts": [_metric_text(v, digits) for v in values],
                      "delta_text": "" if delta is None else f"{delta:+.{digits}f}"})
    shown = [m for m in ("bleu", "rouge1", "rougeL", "exact_match", "accuracy") if any(
        m in evaluation.metrics[t] for t in targets)]
    scale = {"bleu": 0.01}  # BLEU is 0..100; the others 0..1
    chart = {"labels": shown, "datasets": [
        {"label": t, "data": [round(evaluation.metrics[t].get(m, 0) * scale.get(m, 1), 4) for m in shown]}
        for t in targets if not t.startswith("checkpoint-")]}
    return {"targets": targets, "table": table, "chart": chart}


def stored_completions_visible_to(user) -> QuerySet[StoredCompletion]:
    """``user``'s stored completions still within their retention (an expired one awaits the purge)."""
    return StoredCompletion.objects.filter(owner=user).exclude(expires_at__lte=timezone.now())


def stored_completion_get(user, completion_id: str) -> StoredCompletion:
    found = stored_completions_visible_to(user).filter(pk=completion_id).first()
    if found is None:
        raise Http404(f"No such stored completion: {completion_id}")
    return found


COMPLETION_RATINGS = ("up", "down", "rated", "unrated", "corrected")


def stored_completions_filtered(user, *, model: str = "", metadata: dict | None = None, rating: str = "",
                                created_after: datetime | None = None, created_before: datetime | None = None,
                                ) -> QuerySet[StoredCompletion]:
    """``user``'s stored completions by model (the id asked for, or the version that answered), metadata
    (every key=value given), rating (``COMPLETION_RATINGS``) and creation time (after ≤ created < before)."""
    found = stored_completions_visible_to(user)
    if model:
        found = found.filter(Q(model=model) | Q(model_version=model))
    for index, (key, value) in enumerate((metadata or {}).items()):
        # KeyTextTransform takes the key whole: one with "__" in it is not read as a path
        found = found.alias(**{f"_meta{index}": KeyTextTransform(key, "metadata")}).filter(**{f"_meta{index}": value})
    if rating == "up":
        found = found.filter(rating=StoredCompletion.Rating.UP)
    elif rating == "down":
        found = found.filter(rating=StoredCompletion.Rating.DOWN)
    elif rating == "rated":
        found = found.filter(rating__isnull=False)
    elif rating == "unrated":
        found = found.filter(rating__isnull=True)
    elif rating == "corrected":
        found = found.exclude(correction="")
    if created_after is not None:
        found = found.filter(created_at__gte=created_after)
    if created_before is not None:
        found = found.filter(created_at__lt=created_before)
    return found
