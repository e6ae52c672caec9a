"""What the dataset page and its websocket render: one context, the same partials.

The page renders the dataset as it stands; ``dataset_update_html`` renders the same partials
out of band when the worker reports progress, a verdict or finished token statistics.
"""

import math

from django.template.loader import render_to_string
from django.urls import reverse

from datasets_app import selectors, services
from datasets_app.forms import ImageSplitForm, PrepareForm
from datasets_app.models import Dataset, TokenStats
from models_app.base_models.selectors import base_model_for_stats, base_models_usable_by
from workers.quality import row_quality

PREVIEW_ROWS = 20


def dataset_page_stats(dataset: Dataset) -> dict:
    """Token statistics for the page: ``{"status": ready|computing|failed|not_computed|unavailable, ...}``.

    Only reads: the counts are asked for when the dataset turns ready (or with the page's button),
    and a worker's result reaches an open page through the dataset's websocket group.
    """
    base = base_model_for_stats()
    if dataset.status != Dataset.Status.READY or not dataset.training_format or base is None:
        return {"status": "unavailable"}
    stats = services.token_stats_current(owner=dataset.owner, dataset=dataset, base_model=base)
    if stats is None:
        return {"status": "not_computed", "model": base.name}
    if stats.status == TokenStats.Status.FAILED:
        return {"status": "failed", "error": stats.error, "model": base.name}
    if stats.status != TokenStats.Status.READY:
        return {"status": "computing", "model": base.name}
    summary = services.token_stats_summary(stats, max_length=min(1024, base.context_length),
                                           context_length=base.context_length)
    histogram = summary["histogram"]
    chart = {
        "labels": [_bin_label(b) for b in histogram["prompt"]],
        "prompt": [b["count"] for b in histogram["prompt"]],
        "completion": [b["count"] for b in histogram["completion"]],
    }
    return {"status": "ready", "model": base.name, "summary": summary, "chart": chart,
            "bins": list(zip(chart["labels"], chart["prompt"], chart["completion"], strict=True))}


def _bin_label(bin_: dict) -> str:
    """"24–27", "5" (a bin one token wide) or "2,048+" (the open last bin of a long tail)."""
    if bin_["to"] is None:
        return f"{bin_['from']:,}+"
    last = bin_["to"] - 1
    return f"{bin_['from']:,}" if last == bin_["from"] else f"{bin_['from']:,}–{last:,}"


def prepare_form_for(dataset: Dataset, data=None) -> PrepareForm | ImageSplitForm:
    """The page's "prepare a new version" form, with the options that apply to this dataset."""
    if dataset.is_vision:
        return ImageSplitForm(data)
    return PrepareForm(data, dataset=dataset, base_models=list(base_models_usable_by(dataset.owner).order_by("name")))


CHART_WIDTH = 360  # pixels of the longest bar of the class chart
CHART_ROW = 22


def dataset_images_page(dataset: Dataset) -> dict:
    """A vision dataset's report: the class chart's bars (an SVG drawn here: no script needed), the
    thumbnails per class (served to the owner by ``datasets:thumbnail``) and the problems."""
    stats = dataset.stats or {}
    classes = stats.get("classes", [])
    largest = max((c["count"] for c in classes), default=0) or 1
    bars = [{**c, "y": index * CHART_ROW, "text_y": index * CHART_ROW + 15,
             "width": max(1, round(c["count"] * CHART_WIDTH / largest)),
             "validation_width": round(c.get("validation", 0) * CHART_WIDTH / largest)}
            for index, c in enumerate(classes)]
    for bar in bars:
        bar["count_x"] = 150 + bar["width"] + 6
    grid: dict[str, list] = {c["label"]: [] for c in classes}
    for index, thumbnail in enumerate(stats.get("thumbnails", [])):
        grid.setdefault(thumbnail["label"], []).append(
            {"image": thumbnail["image"], "url": reverse("datasets:thumbnail", args=[dataset.id, index])})
    report = dataset.validation_report or {}
    return {"bars": bars, "chart_height": len(bars) * CHART_ROW, "chart_width": 150 + CHART_WIDTH + 60,
            "grid": [{"label": label, "thumbnails": items} for label, items in grid.items()],
            "images_stats": stats, "problems": report.get("errors", []), "warnings": report.get("warnings", [])}


def dataset_detail_context(dataset: Dataset, *, page: int = 1,
                           prepare_form: PrepareForm | ImageSplitForm | None = None) -> dict:
    if dataset.is_vision:
        return {"dataset": dataset, "actions": services.dataset_actions(dataset),
                "versions": selectors.dataset_versions(dataset),
                "prepare_form": prepare_form or prepare_form_for(dataset), "live": not dataset.is_final,
                **dataset_images_page(dataset)}
    pages = max(1, math.ceil(dataset.row_count / PREVIEW_ROWS)) if dataset.status == Dataset.Status.READY else 1
    page = min(max(1, page), pages)
    offset = (page - 1) * PREVIEW_ROWS
    stats = dataset_page_stats(dataset)
    preview = selectors.dataset_rows(dataset, offset=offset, limit=PREVIEW_ROWS)
    fmt = dataset.training_format or dataset.format
    return {
        "dataset": dataset,
        "actions": services.dataset_actions(dataset),
        "preview": preview,
        # the same score the ``quality`` operation filters by, for the rows on show
        "preview_scored": [(row, row_quality(row, fmt)) for row in preview],
        "preview_offset": offset,
        "preview_end": offset + len(preview),
        "preview_page": page,
        "preview_pages": pages,
        "stats": stats,
        "versions": selectors.dataset_versions(dataset),
        "prepare_form": prepare_form or prepare_form_for(dataset),
        "split_validation": selectors.dataset_split_validation(dataset),
        "jobs": list(dataset.jobs.order_by("-created_at")[:20]),
        # the socket stays up while something can still change on the page
        "live": not dataset.is_final or stats["status"] == "computing",
    }


def dataset_update_html(dataset: Dataset) -> str:
    """Out-of-band fragments for a websocket update: the status always, the body once it is final."""
    context = dataset_detail_context(dataset) if dataset.is_final else {"dataset": dataset}
    return render_to_string("datasets_app/partials/dataset_update.html", {**context, "oob": True})
