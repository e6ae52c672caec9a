"""The price table behind the cost estimate before launch (``jobs_app.services.costs``).

``PRICES`` maps a provider's kind (``local``, ``openai``) or a provider's own name to its prices:

- ``local``: ``{"gpu_hour_usd": 2.0, "cpu_hour_usd": 0.1}``, per device-hour of a worker;
- ``openai`` (or a named remote provider): ``{"per_million_tokens": {"<model>": usd}}``, per million
  training tokens (tokens per epoch × epochs, as OpenAI bills).

The environment's ``PRICES`` (JSON, or the path of a JSON file) is merged over the defaults below,
provider by provider and model by model.
"""

import json
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# OpenAI's published fine-tuning training prices (USD per 1M training tokens) when this was written:
# defaults only, check them against https://openai.com/api/pricing/ (or your provider's page) and
# override them through PRICES.
OPENAI_TRAINING_PER_MILLION = {
    "gpt-4o-mini-2024-07-18": 3.00,
    "gpt-4o-2024-08-06": 25.00,
    "gpt-4.1-nano-2025-04-14": 1.50,
    "gpt-4.1-mini-2025-04-14": 5.00,
    "gpt-4.1-2025-04-14": 25.00,
    "gpt-3.5-turbo-0125": 8.00,
}


def prices_load(text: str, *, gpu_hour_usd: float, cpu_hour_usd: float) -> dict:
    """The defaults with ``text`` (JSON, or a path to a JSON file; empty: none) merged over them."""
    prices = {"local": {"gpu_hour_usd": gpu_hour_usd, "cpu_hour_usd": cpu_hour_usd},
              "openai": {"per_million_tokens": dict(OPENAI_TRAINING_PER_MILLION)}}
    text = text.strip()
    if not text:
        return prices
    try:
        given = json.loads(text if text.startswith("{") else Path(text).read_text())
    except (OSError, ValueError) as error:
        raise ImproperlyConfigured(f"PRICES: give JSON or the path of a JSON file ({error})") from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise ImproperlyConfigured('PRICES: an object of providers, e.g. {"openai": {"per_million_tokens": '
                                   '{"gpt-4o-mini-2024-07-18": 3.0}}}')
    for provider, table in given.items():
        merged = {**prices.get(provider, {}), **table}
        if "per_million_tokens" in table:
            merged["per_million_tokens"] = {**prices.get(provider, {}).get("per_million_tokens", {}),
                                            **table["per_million_tokens"]}
        prices[provider] = merged
    return prices
