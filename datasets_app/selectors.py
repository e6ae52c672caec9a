"""Reads of datasets shared by views and the API."""

import json

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


def dataset_preview(dataset: Dataset, *, rows: int = 20) -> list[dict]:
    """The first ``rows`` rows of the stored file, parsed (the file was checked on upload)."""
    preview = []
    with dataset.file.open("rb") as handle:
        for line in handle:
            if len(preview) >= rows:
                break
            if line.strip():
                try:
                    preview.append(json.loads(line))
                except ValueError:
                    preview.append({"unparsed": line.decode(errors="replace")[:500]})
    return preview
