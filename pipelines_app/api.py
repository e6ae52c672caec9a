"""The pipelines API: create (a JSON or YAML recipe), list, retrieve; runs (create, list, retrieve)."""

import yaml
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import parsers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.pagination import cursor_page
from finetune_site.parsers import JSONParser, json_problem
from pipelines_app import selectors, services
from pipelines_app.models import Pipeline, PipelineRun, PipelineStep
from pipelines_app.selectors import run_latest


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def step_object(step: PipelineStep) -> dict:
    return {"id": step.step_id, "type": step.type, "status": step.status, "needs": step.needs,
            "object_id": step.object_id or None, "outputs": step.outputs, "attempts": step.attempts,
            "reused": step.reused_from_id is not None, "key": step.key, "error": step.error or None,
            "reason": step.reason or None, "retry_at": _ts(step.retry_at) if step.status == "retrying" else None,
            "started_at": _ts(step.started_at), "finished_at": _ts(step.finished_at)}


def run_object(run: PipelineRun) -> dict:
    return {"object": "pipeline.run", "id": run.id, "pipeline_id": run.pipeline_id, "status": run.status,
            "inputs": run.inputs, "created_at": _ts(run.created_at), "finished_at": _ts(run.finished_at),
            "steps": [step_object(s) for s in run.steps.all()]}


def pipeline_object(pipeline: Pipeline) -> dict:
    latest = run_latest(pipeline)
    return {"object": "pipeline", "id": pipeline.id, "name": pipeline.name, "recipe": pipeline.recipe,
            "created_at": _ts(pipeline.created_at), "latest_run": run_object(latest) if latest else None}


class YAMLParser(parsers.BaseParser):
    """A recipe written in YAML (``Content-Type: application/yaml``), held to the JSON parser's limits."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = yaml.safe_load(stream.read().decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
            raise ParseError(f"YAML parse error - {exc}") from None
        problem = json_problem(data)
        if problem:
            raise ParseError(f"YAML parse error - {problem}")
        return data


class TextYAMLParser(YAMLParser):
    media_type = "text/yaml"


RECIPE_EXAMPLE = {
    "name": "support-bot",
    "inputs": {"dataset": "file-abc123"},
    "steps": [
        {"id": "clean", "type": "prepare", "dataset": "${inputs.dataset}", "operations": [{"op": "clean"}]},
        {"id": "dedup", "type": "prepare", "dataset": "${steps.clean.dataset}",
         "operations": [{"op": "dedup"}, {"op": "split", "validation_share": 0.2}]},
        {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${steps.dedup.dataset}",
         "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto"}}}},
        {"id": "evaluate", "type": "evaluate", "model": "${steps.train.model}",
         "dataset": "${steps.dedup.validation}", "gate": {"metric": "eval_loss", "min_improvement": 0.0}},
        {"id": "export", "type": "export", "needs": ["evaluate"], "model": "${steps.train.model}",
         "kind": "adapter"},
    ],
}


class PipelinesApi(APIView):
    parser_classes = [JSONParser, YAMLParser, TextYAMLParser]

    @extend_schema(request=dict, responses={200: dict}, summary="Create a pipeline and start its first run",
                   description="The body is the recipe (JSON, or YAML with Content-Type application/yaml), "
                               "checked whole before anything runs: a 400's `param` names the bad field "
                               "(`steps[2].method.supervised.hyperparameters.n_epochs`).",
                   examples=[OpenApiExample("clean, dedup, train, evaluate, export", value=RECIPE_EXAMPLE)])
    def post(self, request):
        pipeline = services.pipeline_create(owner=request.user, recipe=request.data)
        return Response(pipeline_object(pipeline))

    @extend_schema(responses={200: dict}, summary="List your pipelines, newest first")
    def get(self, request):
        return Response(cursor_page(request, selectors.pipelines_visible_to(request.user), pipeline_object))


class PipelineApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a pipeline with its latest run")
    def get(self, request, pipeline_id: str):
        return Response(pipeline_object(selectors.pipeline_get(request.user, pipeline_id)))


class RunCreateSerializer(serializers.Serializer):
    inputs = serializers.DictField(child=serializers.CharField(), required=False,
                                   help_text='New input datasets by name, e.g. {"dataset": "file-…"}; the others '
                                             "stay as the recipe has them.")


class PipelineRunsApi(APIView):
    @extend_schema(request=RunCreateSerializer, responses={200: dict}, summary="Run a pipeline again",
                   description="Steps whose settings and inputs are unchanged reuse what an earlier run made.")
    def post(self, request, pipeline_id: str):
        pipeline = selectors.pipeline_get(request.user, pipeline_id)
        form = RunCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        run = services.pipeline_run_create(pipeline=pipeline, inputs=form.validated_data.get("inputs"))
        return Response(run_object(run))

    @extend_schema(responses={200: dict}, summary="List a pipeline's runs, newest first")
    def get(self, request, pipeline_id: str):
        pipeline = selectors.pipeline_get(request.user, pipeline_id)
        return Response(cursor_page(request, pipeline.runs.all(), run_object))


class PipelineRunApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a pipeline run with its steps")
    def get(self, request, pipeline_id: str, run_id: str):
        return Response(run_object(selectors.run_get(request.user, pipeline_id, run_id)))
