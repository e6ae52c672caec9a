"""Reads of base models: a user sees the shared ones (no owner) and their own; jobs, chat and
evaluations use only those that are ready."""

import math

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404

from finetune_site.errors import InvalidRequest
from models_app.base_models.models import (
    REMOTE_PREFIX,
    USAGE_SAMPLES_KEPT,
    BaseModel,
    BaseModelUsage,
    BaseModelUsageSample,
    UsageSampleFields,
    UsageTotals,
)

NAME_MAX = 200  # BaseModel.name's length


def base_models_visible_to(user) -> QuerySet[BaseModel]:
    """Shared base models and ``user``'s own, whatever their status (the list a user reads)."""
    shared = Q(owner__isnull=True)
    return BaseModel.objects.filter(shared | Q(owner=user) if getattr(user, "is_authenticated", False) else shared)


def base_models_usable_by(user) -> QuerySet[BaseModel]:
    """The base models ``user`` can name as ``model`` here: visible, ready and not a remote provider's."""
    return base_models_visible_to(user).filter(status=BaseModel.Status.READY).exclude(
        source__startswith=REMOTE_PREFIX)


def base_models_training(user, *, images: bool) -> QuerySet[BaseModel]:
    """The usable base models that train images (``cnn`` and vision backbones), or else text."""
    from models_app.base_models.services import VISION_FAMILIES

    usable = base_models_usable_by(user)
    return usable.filter(family__in=VISION_FAMILIES) if images else usable.exclude(family__in=VISION_FAMILIES)


def base_model_get(user, name: str) -> BaseModel:
    """The base model ``name`` if ``user`` may see it, else a 404 (another user's looks absent)."""
    base = base_models_visible_to(user).filter(name=name).first()
    if base is None:
        raise Http404(f"No such base model: {name}")
    return base


def base_model_find(name) -> BaseModel | None:
    """The base model called ``name``, whoever owns it: for work already allowed (a task given its name)."""
    return BaseModel.objects.filter(name=name).first() if isinstance(name, str) else None


def base_model_named(name, *, user, param: str = "model") -> BaseModel:
    """The base model called ``name`` that ``user`` may use, or a 400 naming ``param`` and listing the
    usable ones (one that is still being read, or failed, says so)."""
    base = base_models_visible_to(user).filter(name=name).first() if isinstance(name, str) else None
    if base is not None and base.is_remote:
        raise InvalidRequest(base_model_remote_problem(base), param=param, code="model_is_remote")
    if base is not None and base.status != BaseModel.Status.READY:
        reason = f": {base.error}" if base.error else ""
        raise InvalidRequest(f"base model {name!r} is {base.status}, not ready{reason}", param=param,
                             code="model_not_ready")
    if base is None:
        known = ", ".join(base_models_usable_by(user).values_list("name", flat=True)) or "none"
        raise InvalidRequest(f"unknown base model {name!r}; available: {known}", param=param,
                             code="model_not_found")
    return base


def base_model_remote_problem(base: BaseModel) -> str:
    """Why a remote provider's model cannot be used here."""
    return (f"{base.name!r} is a remote provider's model, with no files here: only a job on a provider can "
            "use it (provider: <name>); name a local base model (GET /v1/base_models) for anything else")


def base_model_for_provider(name, *, user, provider: str) -> BaseModel:
    """The base model a job on the remote ``provider`` names: a visible one by that name, else a remote
    one, unsaved (``base_model_remote_register`` stores it with the job): the provider checks the name
    and its refusal is the job's error. A 400 naming ``model`` for a name that cannot be one."""
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise InvalidRequest(f"model must name a base model, here or at the provider (1 to {NAME_MAX} characters)",
                             param="model")
    base = base_models_visible_to(user).filter(name=name).first()
    if base is not None:
        return base
    if BaseModel.objects.filter(name=name).exists():  # another user's own model holds the name
        raise InvalidRequest(f"the name {name!r} is taken here by a base model you cannot use", param="model",
                             code="model_not_found")
    return BaseModel(name=name, source=REMOTE_PREFIX + provider, family="remote", status=BaseModel.Status.READY)


def base_model_for_stats() -> BaseModel | None:
    """Whose tokenizer a dataset's page counts with: ``DATASET_STATS_MODEL``, else the first shared one
    by name (the page shows the counts to everyone, so never a user's own)."""
    shared = BaseModel.objects.filter(owner__isnull=True, status=BaseModel.Status.READY).exclude(
        source__startswith=REMOTE_PREFIX)
    return shared.filter(name=settings.DATASET_STATS_MODEL).first() or shared.order_by("name").first()


def base_model_usage(base: BaseModel) -> dict:
    """Chat usage of a base model (``usage_summary``)."""
    return usage_summary(totals=BaseModelUsage, samples=BaseModelUsageSample, key={"base_model": base})


def usage_summary(*, totals: type[UsageTotals], samples: type[UsageSampleFields], key: dict) -> dict:
    """Chat usage of the model ``key`` names: requests, tokens in and out (all time), and p50/p95 latency in
    milliseconds over the newest requests kept (``USAGE_SAMPLES_KEPT``)."""
    usage = totals.objects.filter(**key).first()
    latencies = sorted(samples.objects.filter(**key).order_by("-id")
                       .values_list("latency_ms", flat=True)[:USAGE_SAMPLES_KEPT])
    return {"requests": usage.requests if usage else 0,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95),
                           "samples": len(latencies)},
            "last_request_at": usage.last_request_at if usage else None}


def _percentile(values: list[float], percent: int) -> float | None:
    """The nearest-rank percentile of sorted ``values`` (a value that was measured), rounded to 0.1 ms."""
    if not values:
        return None
    rank = max(1, math.ceil(percent / 100 * len(values)))
    return round(values[rank - 1], 1)
