"""What a job would cost before it is launched: its training tokens × epochs priced per token (remote
providers bill so), or its estimated hours × devices priced per device-hour (local workers).

The price table is ``settings.PRICES`` (``finetune_site/prices.py``): defaults, merged with the
operator's own. A model the table does not price, or a local job with no past pace to time it, gets a
null amount with the reason, never an error: the estimate still shows the tokens.
"""

import logging
from dataclasses import replace

from django.conf import settings

from datasets_app.models import Dataset, TokenStats
from datasets_app.services import token_stats_compute, token_stats_current
from jobs_app.models import Provider
from jobs_app.selectors import providers_visible_to, workers_alive
from jobs_app.services.creation import JobRequest, job_provider_check, job_request_check
from jobs_app.services.estimates import job_estimate_draft
from jobs_app.services.providers import LOCAL
from models_app.base_models.selectors import base_model_for_stats

log = logging.getLogger(__name__)
CURRENCY = "usd"


def job_price_estimate(*, owner, provider: str = LOCAL, **request) -> dict:
    """Check ``request`` exactly as ``job_create`` does (the same 400s) and price it on ``provider``,
    creating nothing: the training tokens (per epoch × epochs, counted with the base model's tokenizer;
    a small file not counted yet is counted here), the time where past runs give a pace, and the cost."""
    kind, prices = provider_prices(owner=owner, name=provider)
    checked = job_request_check(owner=owner, provider=provider, **request)
    counted = _counted_as(checked)
    _tokens_count(counted)
    draft = job_estimate_draft(owner=owner, dataset=counted.dataset, base_model=counted.base_model,
                               hyperparameters=checked.hyperparameters, validation=checked.validation,
                               evaluate_checkpoints=checked.evaluate_checkpoints, objective=checked.objective)
    hp = checked.hyperparameters
    basis = draft["tokens_basis"]
    if counted.base_model != checked.base_model and basis == "tokenizer":
        basis = (f"approximation: counted with {counted.base_model.name}'s tokenizer "
                 f"({checked.base_model.name}'s own is the provider's)")
    return {
        "object": "fine_tuning.job.estimate",
        "provider": provider,
        "model": checked.base_model.name,
        "trained_tokens": draft["tokens"],
        "tokens_per_epoch": draft["tokens_per_epoch"],
        "n_epochs": hp["n_epochs"],
        "hyperparameters": hp,
        "tokens_basis": basis,
        "seconds": draft["seconds"] if kind == LOCAL else None,  # a remote's pace is its own
        "peak_memory_bytes": draft["peak_memory_bytes"] if kind == LOCAL else None,  # and its memory
        "memory_basis": draft["memory_basis"] if kind == LOCAL else "none",
        "cost": job_cost(kind=kind, prices=prices, model=checked.base_model.name, tokens=draft["tokens"],
                         seconds=draft["seconds"], devices=hp.get("devices", 1) * hp.get("nodes", 1)),
    }


def provider_prices(*, owner, name: str) -> tuple[str, dict]:
    """(the provider's kind, its price table): ``local``, or a provider ``owner`` may use, priced by its
    own name in ``PRICES`` when listed there, else by its kind. A 400 naming ``provider`` otherwise."""
    remote = job_provider_check(owner=owner, name=name)
    if remote is None:
        return LOCAL, settings.PRICES[LOCAL]
    return remote.kind, remote_prices(remote)


def remote_prices(provider: Provider) -> dict:
    """A remote provider's prices: its own name's entry in ``PRICES`` when there is one, else its kind's."""
    return settings.PRICES.get(provider.name) or settings.PRICES.get(provider.kind, {})


def job_cost(*, kind: str, prices: dict, model: str, tokens: int, seconds: float | None, devices: int) -> dict:
    """The cost of a run: per device-hour for local workers (a GPU's price where a live GPU worker is
    registered, else a CPU's), per million training tokens for remote ones; ``amount`` None with a
    ``reason`` where the table or the estimate cannot say."""
    if kind == LOCAL:
        gpu = any(d.get("kind") == "cuda" for d in workers_alive().values_list("devices", flat=True))
        basis, per_hour = ("gpu_hour", prices["gpu_hour_usd"]) if gpu else ("cpu_hour", prices["cpu_hour_usd"])
        price = {"usd_per_hour": per_hour, "devices": devices}
        if seconds is None:
            return {"amount": None, "currency": CURRENCY, "basis": basis, "price": price,
                    "reason": "no finished run of this model and adapter to time it yet: the cost follows "
                              "the hours, known once one has run"}
        hours = seconds / 3600
        return {"amount": round(hours * devices * per_hour, 6), "currency": CURRENCY, "basis": basis,
                "price": {**price, "hours": round(hours, 6)}}
    per_million = (prices.get("per_million_tokens") or {}).get(model)
    if per_million is None:
        return {"amount": None, "currency": CURRENCY, "basis": "per_token", "price": None,
                "reason": f"no price for {model!r} in the price table (PRICES): add it to estimate the cost"}
    return {"amount": round(tokens / 1_000_000 * per_million, 6), "currency": CURRENCY, "basis": "per_token",
            "price": {"usd_per_million_tokens": per_million}}


def provider_costs(*, owner, model: str, estimate: dict, devices: int) -> list[dict]:
    """What a drafted job (``job_estimate_draft``) would cost on each provider ``owner`` may use, local
    first: ``[{"provider", "cost"}]`` (the wizard's review)."""
    rows = [{"provider": LOCAL, "cost": job_cost(kind=LOCAL, prices=settings.PRICES[LOCAL], model=model,
                                                 tokens=estimate["tokens"], seconds=estimate["seconds"],
                                                 devices=devices)}]
    for provider in providers_visible_to(owner):
        rows.append({"provider": provider.name, "cost": job_cost(
            kind=provider.kind, prices=remote_prices(provider), model=model, tokens=estimate["tokens"],
            seconds=None, devices=devices)})
    return rows


def _counted_as(checked: JobRequest) -> JobRequest:
    """The request whose tokenizer counts the tokens: a remote provider's model has none here, so the
    tokenizer datasets are counted with (``base_model_for_stats``) stands in for it (an approximation,
    said so in the estimate's ``tokens_basis``); without one, a token per 4 bytes."""
    if not checked.base_model.is_remote:
        return checked
    stand_in = base_model_for_stats()
    return replace(checked, base_model=stand_in) if stand_in is not None else checked


def _tokens_count(checked: JobRequest) -> None:
    """Count a small file's tokens now (in this process) when no worker has: the estimate is asked
    for once, before launch, and should not say "a token per 4 bytes" for a file read in a second."""
    hp = checked.hyperparameters
    # reinforcement: sampled answers, not counted from the file; a remote model: no tokenizer here
    if "max_length" not in hp or checked.base_model.is_remote:
        return
    template = hp.get("template", "")
    for dataset in filter(None, (checked.dataset, checked.validation)):
        if (dataset.status != Dataset.Status.READY or not dataset.training_format
                or dataset.byte_size > settings.ESTIMATE_COUNT_INLINE_BYTES):
            continue
        stats = token_stats_current(owner=checked.owner, dataset=dataset, base_model=checked.base_model,
                                    template=template)
        if stats is not None and stats.status == TokenStats.Status.READY:
            continue
        try:
            token_stats_compute(dataset_id=dataset.id, model=checked.base_model.name, template=template)
        except Exception:  # the estimate falls back to bytes; the job's own checks report the error
            log.warning("counting the tokens of %s for an estimate failed", dataset.id, exc_info=True)
