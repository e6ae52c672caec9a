"""Reads of pipelines: who sees which pipelines and runs (the members of their project)."""

from django.db.models import QuerySet
from django.http import Http404

from accounts_app.selectors import project_acting
from pipelines_app.models import Pipeline, PipelineRun


def pipelines_visible_to(user) -> QuerySet[Pipeline]:
    return Pipeline.objects.filter(project=project_acting(user))


def pipeline_get(user, pipeline_id: str) -> Pipeline:
    """One of ``user``'s pipelines, or 404: another user's looks the same as none."""
    pipeline = pipelines_visible_to(user).filter(pk=pipeline_id).first()
    if pipeline is None:
        raise Http404(f"No such pipeline: {pipeline_id}")
    return pipeline


def run_get(user, pipeline_id: str, run_id: str) -> PipelineRun:
    """A run of one of ``user``'s pipelines, or 404."""
    run = (PipelineRun.objects.select_related("pipeline")
           .filter(pipeline__project=project_acting(user), pipeline_id=pipeline_id, pk=run_id).first())
    if run is None:
        raise Http404(f"No such pipeline run: {run_id}")
    return run


def run_latest(pipeline: Pipeline) -> PipelineRun | None:
    return pipeline.runs.order_by("-created_at", "-id").first()
