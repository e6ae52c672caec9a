"""Reads of datasets shared by views and the API."""

import functools
import json
import threading
from itertools import islice

import django_filters
from django.db.models import Q, QuerySet
from django.http import Http404

from accounts_app.selectors import project_acting
from datasets_app.models import RESULTS_PURPOSE, Dataset, DatasetUpload
from finetune_site.errors import InvalidRequest
from models_app.base_models.services import base_model_local_path


def datasets_visible_to(user) -> QuerySet[Dataset]:
    """The datasets of the project ``user`` acts in."""
    return Dataset.objects.filter(project=project_acting(user))


def datasets_listed(user) -> QuerySet[Dataset]:
    """The list page's rows (training data: not jobs' result files), with the original a duplicate repeats
    and the parent of a version."""
    return datasets_visible_to(user).exclude(purpose=RESULTS_PURPOSE).select_related("duplicate_of", "parent")


class DatasetFilter(django_filters.FilterSet):
    """The list filters, shared by ``GET /v1/files`` and the datasets page."""

    purpose = django_filters.CharFilter(field_name="purpose")
    status = django_filters.ChoiceFilter(field_name="status", choices=Dataset.Status.choices)
    search = django_filters.CharFilter(method="_search", max_length=200)
    tag = django_filters.CharFilter(method="_tag", max_length=40)

    class Meta:
        model = Dataset
        fields = ["purpose", "status", "search", "tag"]

    def _search(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        return queryset.filter(Q(name__icontains=value) | Q(filename__icontains=value))

    def _tag(self, queryset: QuerySet, _name: str, value: str) -> QuerySet:
        # the JSON text holds each tag in quotes, and a tag cannot hold one: a portable exact match (SQLite too)
        return queryset.filter(tags__icontains=f'"{value.strip().lower()}"')


def datasets_filter(queryset: QuerySet, params) -> QuerySet:
    """``queryset`` narrowed by the list filters in ``params`` (a QueryDict); a bad value is a 400 naming it."""
    found = DatasetFilter(params, queryset=queryset)
    if not found.is_valid():
        field, errors = next(iter(found.errors.items()))
        raise InvalidRequest(f"{field}: {' '.join(errors)}", param=field)
    return found.qs


def dataset_get(user, file_id: str) -> Dataset:
    """The dataset of the user's project, or 404 (another project's dataset does not exist for them)."""
    dataset = datasets_visible_to(user).filter(pk=file_id).first()
    if dataset is None:
        raise Http404(f"No such file: {file_id}")
    return dataset


def upload_get(user, upload_id: str) -> DatasetUpload:
    """A resumable upload of the user's project, or 404."""
    upload = DatasetUpload.objects.filter(project=project_acting(user), pk=upload_id).first()
    if upload is None:
        raise Http404(f"No such upload: {upload_id}")
    return upload


def dataset_thumbnail_name(dataset: Dataset, index: int) -> str:
    """The storage name of a vision dataset's ``index``-th thumbnail, or 404."""
    thumbnails = (dataset.stats or {}).get("thumbnails", []) if dataset.is_vision else []
    if not 0 <= index < len(thumbnails) or not thumbnails[index].get("name"):
        raise Http404(f"No such thumbnail: {index}")
    return thumbnails[index]["name"]


def dataset_rows(dataset: Dataset, *, offset: int = 0, limit: int = 20) -> list[dict]:
    """Rows ``offset`` to ``offset + limit`` as the trainer reads them (streamed, never loaded whole)."""
    if dataset.status != Dataset.Status.READY:
        return []
    with dataset.training_file.storage.open(dataset.training_file_name, "rb") as handle:
        lines = (line for line in handle if line.strip())
        return [json.loads(line) for line in islice(lines, offset, offset + limit)]


def dataset_versions(dataset: Dataset) -> list[Dataset]:
    """The dataset's lineage: its ancestors (oldest first), itself, then versions made from it."""
    chain, current = [], dataset.parent
    while current is not None and len(chain) < 100:
        chain.append(current)
        current = current.parent
    children = list(dataset.versions.order_by("created_at"))
    return [*reversed(chain), dataset, *children]


def dataset_split_validation(dataset: Dataset) -> Dataset | None:
    """For the train part of a split, its validation part (made with it, from the same parent)."""
    if not dataset.parent_id or {"op": "part", "part": "train"} not in (dataset.operations or []):
        return None
    name = dataset.filename.removesuffix(".jsonl") + ".validation.jsonl"
    return Dataset.objects.filter(project_id=dataset.project_id, parent_id=dataset.parent_id, filename=name).first()


_TOKENIZER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _tokenizer_for(path: str, template: str):
    """A loaded tokenizer per (model, template), kept: pages showing the loss mask stay fast."""
    from workers.loading import tokenizer_load

    return tokenizer_load(path, template=template)


def dataset_dry_run(dataset: Dataset, *, base_model, template: str, max_length: int, rows: int = 3,
                    offset: int = 0) -> dict:
    """The first ``rows`` rows rendered exactly as the trainer will see them, with loss marks.

    Loads only the tokenizer (no weights); rows are read a page at a time from storage.
    """
    tokenizer = _tokenizer_for(base_model_local_path(base_model), template)
    with _TOKENIZER_LOCK:  # a shared fast tokenizer must not be used by two threads at once
        return _dry_run_rows(dataset, tokenizer, template=template, max_length=max_length, rows=rows, offset=offset)


def _dry_run_rows(dataset: Dataset, tokenizer, *, template: str, max_length: int, rows: int, offset: int) -> dict:
    from workers.templates import TemplateError, render, tokens_show

    shown = []
    for number, row in enumerate(dataset_rows(dataset, offset=offset, limit=rows), start=offset + 1):
        try:
            rendered = render(tokenizer, row, dataset.training_format, template=template, max_length=max_length)
        except TemplateError as exc:
            return {"template": template, "max_length": max_length, "rows": shown, "error": str(exc)}
        shown.append({
            "row": number, "text": tokenizer.decode(rendered.ids), "tokens": tokens_show(tokenizer, rendered),
            "total_tokens": rendered.total_tokens, "trainable_tokens": rendered.trainable,
            "truncated": rendered.truncated,
        })
    return {"template": template, "max_length": max_length, "rows": shown, "error": None}


def dataset_preview(dataset: Dataset, *, rows: int = 20) -> list[dict]:
    """The first ``rows`` rows as the trainer reads them, for the dataset page."""
    return dataset_rows(dataset, limit=rows)
