"""Model card writes: a person's edit (kept in the adapter zip's README.md too) and the evaluation section
that a finished evaluation refreshes (``models_app.cards`` generates and renders cards)."""

import tempfile
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from finetune_site.errors import InvalidRequest
from finetune_site.files import storage_fetch, storage_put_file
from models_app import tasks
from models_app.cards import (
    CARD_MAX_CHARS,
    model_card_evaluations,
    model_card_text,
    model_card_with_evaluations,
)
from models_app.models import FineTunedModel
from models_app.services.artifacts import zip_readme_replace


def model_card_edit(*, model: FineTunedModel, card) -> FineTunedModel:
    """Replace the card of ``model`` with ``card`` (Markdown); the adapter zip's README.md follows, and
    exports made from now on carry it. Keep the ``<!-- evaluations -->`` markers to have the evaluation
    section refreshed as evaluations finish."""
    if not isinstance(card, str) or not card.strip():
        raise InvalidRequest("card must be the model card's Markdown text, not empty", param="card")
    if len(card) > CARD_MAX_CHARS:
        raise InvalidRequest(f"card must be at most {CARD_MAX_CHARS:,} characters", param="card")
    model.card, model.card_edited_at = card.replace("\r\n", "\n"), timezone.now()
    model.save(update_fields=["card", "card_edited_at"])
    # Rewriting the zip reads and writes the whole adapter (or full model): a task, not the request.
    transaction.on_commit(lambda: tasks.model_card_readme_store.delay(model.id))
    return model


def model_card_evaluations_refresh(*, model: FineTunedModel) -> None:
    """Regenerate the card's evaluation section (an evaluation of ``model`` finished)."""
    card = model_card_text(model)
    refreshed = model_card_with_evaluations(card, model_card_evaluations(model))
    if refreshed != model.card:
        FineTunedModel.objects.filter(pk=model.pk).update(card=refreshed)
        model.card = refreshed


def model_card_readme_store(*, model_id: str) -> None:
    """Make the adapter zip's README.md the card as it is now (edits may come faster than this runs:
    the newest wins)."""
    model = FineTunedModel.objects.filter(pk=model_id).first()
    name = f"{model.adapter_path}.zip" if model else ""
    if model is None or name not in model.artifact_files:
        return
    with tempfile.TemporaryDirectory() as tmp:
        old = storage_fetch(name, Path(tmp) / "old.zip")
        storage_put_file(zip_readme_replace(old, Path(tmp) / "adapter.zip", model.card), name)
