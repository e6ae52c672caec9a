"""Reads of models shared by views and the API."""

from django.db.models import QuerySet
from django.http import Http404

from models_app.models import BaseModel, Export, FineTunedModel


def fine_tuned_models_visible_to(user) -> QuerySet[FineTunedModel]:
    return FineTunedModel.objects.filter(owner=user).select_related("base_model", "job").prefetch_related("exports")


def model_get(user, model_id: str) -> BaseModel | FineTunedModel:
    """A base model (visible to all) or the user's fine-tuned model, else 404."""
    found = fine_tuned_models_visible_to(user).filter(pk=model_id).first()
    found = found or BaseModel.objects.filter(name=model_id).first()
    if found is None:
        raise Http404(f"No such model: {model_id}")
    return found


def model_public_id(model: BaseModel | FineTunedModel) -> str:
    """The id callers name ``model`` by: a base model's name, a fine-tuned model's id."""
    return model.name if isinstance(model, BaseModel) else model.id


def fine_tuned_model_get(user, model_id: str) -> FineTunedModel:
    found = fine_tuned_models_visible_to(user).filter(pk=model_id).first()
    if found is None:
        raise Http404(f"No such fine-tuned model: {model_id}")
    return found


def exports_visible_to(user) -> QuerySet[Export]:
    return Export.objects.filter(model__owner=user).select_related("model")


def export_get(user, export_id: str) -> Export:
    found = exports_visible_to(user).filter(pk=export_id).first()
    if found is None:
        raise Http404(f"No such export: {export_id}")
    return found
