"""Per-version chat usage, recorded by the inference worker as each reply finishes."""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from models_app.models import USAGE_SAMPLES_KEPT, FineTunedModel, ModelUsage, UsageSample

PRUNE_EVERY = 100  # requests between trims of a version's samples to the newest USAGE_SAMPLES_KEPT


def model_usage_record(*, model: FineTunedModel, prompt_tokens: int, completion_tokens: int,
                       latency_ms: float) -> None:
    """Count one chat request of ``model``: its totals, and a sample (latency, tokens) for the percentiles."""
    with transaction.atomic():
        ModelUsage.objects.get_or_create(model=model)
        counted = ModelUsage.objects.filter(model=model)
        counted.update(requests=F("requests") + 1, prompt_tokens=F("prompt_tokens") + prompt_tokens,
                       completion_tokens=F("completion_tokens") + completion_tokens, last_request_at=timezone.now())
        UsageSample.objects.create(model=model, latency_ms=latency_ms, prompt_tokens=prompt_tokens,
                                   completion_tokens=completion_tokens)
        requests = counted.values_list("requests", flat=True).get()
    if requests % PRUNE_EVERY == 0:
        _samples_trim(model)


def _samples_trim(model: FineTunedModel) -> None:
    kept = list(UsageSample.objects.filter(model=model).order_by("-id")
                .values_list("id", flat=True)[USAGE_SAMPLES_KEPT - 1:USAGE_SAMPLES_KEPT])
    if kept:
        UsageSample.objects.filter(model=model, id__lt=kept[0]).delete()
