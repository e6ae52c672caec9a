"""Reads of datasets shared by views and the API."""

from django.db.models import QuerySet
from django.http import Http404

from datasets_app.models import Dataset


def datasets_visible_to(user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(owner=user)


def dataset_get(user, file_id: str) -> Dataset:
    """The user's dataset, or 404 (another user's dataset does not exist for them)."""
    dataset = datasets_visible_to(user).filter(pk=file_id).first()
    if dataset is None:
        raise Http404(f"No such file: {file_id}")
    return dataset
