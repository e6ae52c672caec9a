"""Per-version chat usage, recorded by the inference worker as each reply finishes."""

from models_app.base_models.services import usage_count
from models_app.models import FineTunedModel, ModelUsage, UsageSample


def model_usage_record(*, model: FineTunedModel, prompt_tokens: int, completion_tokens: int,
                       latency_ms: float) -> None:
    """Count one chat request of ``model``: its totals, and a sample (latency, tokens) for the percentiles."""
    usage_count(totals=ModelUsage, samples=UsageSample, key={"model": model}, prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, latency_ms=latency_ms)
