"""Token statistics: a dataset's rows tokenized as the trainer will, per tokenizer and template.

Counted once per owner, content, reading options, tokenizer and template (``TokenStats``), by
the ``dataset_stats`` task or by a job's checks. Only this module writes ``TokenStats.status``,
through ``TOKEN_STATS_TRANSITIONS``. Reads never queue work: the write paths (a dataset turning
ready, the wizard's model step, ``POST .../stats``) ask for the counts.
"""

import hashlib
import json
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts_app.selectors import project_acting
from datasets_app import tasks
from datasets_app.broadcast import dataset_publish
from datasets_app.models import TOKEN_STATS_TRANSITIONS, Dataset, TokenStats
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from finetune_site.status import status_transition
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import base_model_find, base_model_for_stats
from models_app.base_models.services import base_model_local_path
from workers.templates import TEMPLATE_NAMES

STATS_STALE = timedelta(minutes=15)  # a computation silent this long was lost with its worker
Status = TokenStats.Status


def _stats_key(dataset: Dataset, base_model: BaseModel, template: str) -> dict:
    options = json.dumps(dataset.options or {}, sort_keys=True)
    # per owner: an instant answer must not tell one user that another holds the same file
    return {"owner_id": dataset.owner_id, "sha256": dataset.sha256,
            "options_key": hashlib.sha256(options.encode()).hexdigest(), "tokenizer": base_model.source,
            "template": template}


def token_stats_check(dataset: Dataset, template: str) -> None:
    """Why the dataset cannot be counted with ``template`` (a 409 or 400), or nothing."""
    if dataset.status != Dataset.Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; statistics need a ready dataset", param="file_id",
                       code="dataset_not_ready")
    if not dataset.training_format:
        raise InvalidRequest(f"{dataset.id} holds {dataset.format} rows, which supervised training does not read",
                             param="file_id", code="unsupported_format")
    if template not in TEMPLATE_NAMES:
        raise InvalidRequest(f"template must be one of {', '.join(repr(t) for t in TEMPLATE_NAMES)}",
                             param="template")


def token_stats_current(*, owner, dataset: Dataset, base_model: BaseModel, template: str = "") -> TokenStats | None:
    """The stored counts (or their ``computing``/``failed`` state) for the dataset's maker or a member acting
    in its project, or None: a read."""
    if dataset.owner_id != owner.id and dataset.project_id != project_acting(owner).id:
        return None
    return TokenStats.objects.filter(**_stats_key(dataset, base_model, template)).first()


def token_stats_request(*, dataset: Dataset, base_model: BaseModel, template: str = "") -> TokenStats:
    """Ask for the counts: the stored ones, or a ``computing`` row with the ``dataset_stats`` task
    queued. A failed or lost computation is started again; one in progress is left alone."""
    token_stats_check(dataset, template)
    with transaction.atomic():
        stats, created = _stats_row(dataset, base_model, template)
        stale = stats.status == Status.COMPUTING and stats.updated_at < timezone.now() - STATS_STALE
        if not (created or stale or stats.status == Status.FAILED):
            return stats
        if not created:
            stats = status_transition(TokenStats, stats.pk, Status.COMPUTING, rules=TOKEN_STATS_TRANSITIONS,
                                      error="", updated_at=timezone.now())
        transaction.on_commit(lambda: tasks.dataset_stats.delay(dataset.id, base_model.name, template))
    return stats


def _stats_row(dataset: Dataset, base_model: BaseModel, template: str) -> tuple[TokenStats, bool]:
    key = _stats_key(dataset, base_model, template)
    try:
        with transaction.atomic():
            return TokenStats.objects.get_or_create(**key)
    except IntegrityError:  # another request created it first
        return TokenStats.objects.get(**key), False


def token_stats_ensure(*, dataset: Dataset) -> TokenStats | None:
    """The counts the dataset's page shows (its default model, the model's own template), asked for
    when the dataset turns ready; None when the dataset's rows are not counted (preference pairs)."""
    base = base_model_for_stats()
    if base is None or not dataset.training_format:
        return None
    return token_stats_request(dataset=dataset, base_model=base)


def token_stats_compute(*, dataset_id: str, model: str, template: str = "") -> TokenStats | None:
    """Tokenize the dataset's rows as the trainer will (the ``dataset_stats`` task; jobs call it too).

    Cached: a second call with the same owner, content, tokenizer and template returns the stored
    counts. A failure is stored as ``failed`` with its error, and raised.
    """
    from workers.stats import StatsConfig, token_lengths

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    base = base_model_find(model)
    if dataset is None or base is None:
        return None
    token_stats_check(dataset, template)
    stats = _stats_started(dataset, base, template)
    if stats.status == Status.READY:
        return stats
    work_dir = Path(settings.WORK_DIR) / "stats" / f"{dataset.id}-{timezone.now().timestamp():.0f}"
    try:
        local = storage_fetch(dataset.training_file_name, work_dir / "train.jsonl")
        config = StatsConfig(path=str(local), format=dataset.training_format, template=template,
                             tokenizer_path=base_model_local_path(base), total_rows=dataset.row_count)
        lengths = token_lengths(config)
    except Exception as exc:
        _stats_finish(dataset, stats, Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    stride = max(1, -(-dataset.row_count // config.max_rows)) if dataset.row_count else 1
    stats = _stats_finish(dataset, stats, Status.READY, rows=lengths.rows, stride=stride, sampled=lengths.sampled,
                          totals=lengths.totals, targets=lengths.targets, structure=lengths.structure,
                          errors=lengths.errors, error="")
    if not template and base == base_model_for_stats():  # the page's counts: kept on the dataset too
        summary = token_stats_summary(stats, max_length=min(1024, base.context_length),
                                      context_length=base.context_length)
        Dataset.objects.filter(pk=dataset.id).update(stats={"model": model, "template": template, **summary})
    return stats


def _stats_started(dataset: Dataset, base: BaseModel, template: str) -> TokenStats:
    """The row to fill: a failed one starts over (a job's own check asks again)."""
    stats, _ = _stats_row(dataset, base, template)
    if stats.status == Status.FAILED:
        stats = status_transition(TokenStats, stats.pk, Status.COMPUTING, rules=TOKEN_STATS_TRANSITIONS, error="",
                                  updated_at=timezone.now())
    return stats


def _stats_finish(dataset: Dataset, stats: TokenStats, to: str, **fields) -> TokenStats:
    try:
        stats = status_transition(TokenStats, stats.pk, to, rules=TOKEN_STATS_TRANSITIONS,
                                  updated_at=timezone.now(), **fields)
    except Conflict:  # counted meanwhile by another worker (a job's check and the task): theirs stands
        return TokenStats.objects.get(pk=stats.pk)
    dataset_publish(dataset.id, {"status": dataset.status, "stats": to})  # an open page fills in
    return stats


def token_stats_summary(stats: TokenStats, *, max_length: int, context_length: int | None = None) -> dict:
    """Histograms, truncation and the suggested ``max_length`` for ``max_length`` (no tokenizing)."""
    from workers.stats import TokenLengths, length_summary

    lengths = TokenLengths(totals=stats.totals, targets=stats.targets, rows=stats.rows, sampled=stats.sampled,
                           structure=stats.structure, errors=stats.errors)
    summary = length_summary(lengths, max_length=max_length, context_length=context_length)
    summary["rows_without_trainable_tokens_examples"] = [
        index * stats.stride + 1 for index, (total, target) in enumerate(zip(stats.totals, stats.targets, strict=True))
        if target == 0 or total - target >= max_length][:10]
    return summary
