"""Reads of base models: every user sees every base model."""

from django.conf import settings
from django.db.models import QuerySet

from finetune_site.errors import InvalidRequest
from models_app.base_models.models import BaseModel


def base_models_all() -> QuerySet[BaseModel]:
    return BaseModel.objects.all()


def base_model_find(name) -> BaseModel | None:
    return BaseModel.objects.filter(name=name).first() if isinstance(name, str) else None


def base_model_named(name, *, param: str = "model") -> BaseModel:
    """The base model called ``name``, or a 400 naming ``param`` and listing the known ones."""
    base = base_model_find(name)
    if base is None:
        known = ", ".join(BaseModel.objects.values_list("name", flat=True)) or "none"
        raise InvalidRequest(f"unknown base model {name!r}; available: {known}", param=param,
                             code="model_not_found")
    return base


def base_model_for_stats() -> BaseModel | None:
    """Whose tokenizer a dataset's page counts with: ``DATASET_STATS_MODEL``, else the first by name."""
    return base_model_find(settings.DATASET_STATS_MODEL) or BaseModel.objects.order_by("name").first()
