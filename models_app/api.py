"""The Models API (OpenAI-shaped), chat completions and artifact downloads."""

import json
import re
import time
from datetime import UTC, datetime

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, Http404, HttpResponseRedirect, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.api import dataset_object
from datasets_app.selectors import dataset_get
from finetune_site.api_errors import error_body
from finetune_site.errors import InvalidRequest, NotFound
from finetune_site.files import storage_is_s3
from finetune_site.ids import new_id
from finetune_site.pagination import cursor_page
from finetune_site.semver import semver_parse
from jobs_app.models import Checkpoint
from models_app import selectors, services
from models_app.base_models.models import BaseModel
from models_app.base_models.selectors import base_models_usable_by
from models_app.cards import model_card_text
from models_app.models import AliasChange, Evaluation, Export, FineTunedModel, StoredCompletion
from models_app.replies import END_TYPES, reply_receive
from models_app.services.inference import MAX_CHOICES
from workers.formats import tool_calls_check, tools_check
from workers.inference import RESPONSE_FORMATS


def model_object(model: BaseModel | FineTunedModel) -> dict:
    if isinstance(model, BaseModel):
        return {"id": model.name, "object": "model", "created": int(model.created_at.timestamp()),
                "owned_by": "system", "source": model.source, "family": model.family}
    return {
        "id": model.id, "object": "model", "created": int(model.created_at.timestamp()),
        "owned_by": model.project_id, "base_model": model.base_model.name,
        "fine_tuning_job": model.job_id, "adapter": model.adapter,
        "artifacts": ["adapter", *sorted({e.artifact for e in model.exports.all()
                                          if e.status == Export.Status.VERIFIED} - {"adapter"})],
        # registry extensions
        "name": model.name, "version": model.semver, "version_number": model.version, "reference": model.reference,
        "aliases": sorted(a.alias for a in model.aliases.all()), "archived": model.archived_at is not None,
        "promotion": model.promotion or None,
    }


def evaluation_object(evaluation: Evaluation, *, rows: bool = True) -> dict:
    finished = int(evaluation.finished_at.timestamp()) if evaluation.finished_at else None
    body = {
        "id": evaluation.id, "object": "model.evaluation", "status": evaluation.status,
        "progress": evaluation.progress, "kind": evaluation.kind,
        "model": evaluation.model_id or evaluation.base_model.name, "base_model": evaluation.base_model.name,
        "file": evaluation.dataset_id, "compare_base": evaluation.compare_base,
        "checkpoints": evaluation.checkpoints, "max_rows": evaluation.max_rows,
        "max_new_tokens": evaluation.max_new_tokens, "rows_evaluated": evaluation.rows_evaluated,
        "classification": evaluation.classification, "metrics": evaluation.metrics,
        "error": evaluation.error or None, "created_at": int(evaluation.created_at.timestamp()),
        "finished_at": finished,
    }
    if rows:
        body["rows"] = evaluation.rows
    return body


def alias_change_object(change: AliasChange) -> dict:
    return {"alias": change.alias, "action": change.action, "model": change.model_id,
            "previous": change.previous_id, "created_at": int(change.created_at.timestamp())}


def export_object(export: Export) -> dict:
    finished = int(export.finished_at.timestamp()) if export.finished_at else None
    return {
        "id": export.id, "object": "model.export", "model": export.source_id, "checkpoint": export.checkpoint_id,
        "kind": export.kind,
        "quantization": export.quantization, "status": export.status, "progress": export.progress,
        "error": export.error or None, "artifact": export.artifact, "bytes": export.size_bytes,
        "verification": export.verification, "created_at": int(export.created_at.timestamp()),
        "finished_at": finished,
    }


class ModelsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List base models and your fine-tuned models")
    def get(self, request):
        models = [*base_models_usable_by(request.user), *selectors.fine_tuned_models_visible_to(request.user)]
        return Response({"object": "list", "data": [model_object(m) for m in models], "has_more": False})


class ModelApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a model")
    def get(self, request, model_id: str):
        return Response(model_object(selectors.model_get(request.user, model_id)))

    @extend_schema(responses={200: dict}, summary="Delete a fine-tuned model and its artifacts")
    def delete(self, request, model_id: str):
        services.fine_tuned_model_delete(model=selectors.fine_tuned_model_get(request.user, model_id))
        return Response({"id": model_id, "object": "model", "deleted": True})


class ModelDownloadApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("artifact", str, enum=list(services.ARTIFACTS), default="adapter")],
                   responses={(200, "application/octet-stream"): bytes},
                   summary="Download the adapter or a verified export: a zip or a .gguf file "
                           "(a redirect to a short-lived URL on S3)")
    def get(self, request, model_id: str):
        model = selectors.export_source_get(request.user, model_id)
        name, filename = services.model_artifact_get(model=model,
                                                     artifact=request.query_params.get("artifact", "adapter"))
        if storage_is_s3():
            return HttpResponseRedirect(default_storage.url(name))
        return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename)


class ExportCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Export.Kind.values)
    quantization = serializers.ChoiceField(choices=Export.Quantization.values, required=False)


class ModelExportsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List a fine-tuned model's (or a checkpoint's) exports")
    def get(self, request, model_id: str):
        model = selectors.export_source_get(request.user, model_id)
        return Response({"object": "list", "data": [export_object(e) for e in model.exports.all()],
                         "has_more": False})

    @extend_schema(request=ExportCreateSerializer, responses={201: dict},
                   summary="Export a fine-tuned model or one of its checkpoints (ftckpt-… or ft:…:ckpt-step-N) as "
                           "an adapter, merged or gguf; verified before it is offered")
    def post(self, request, model_id: str):
        model = selectors.export_source_get(request.user, model_id)
        data = ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        export = services.export_create(model=model, **data.validated_data)
        return Response(export_object(export), status=201)


class ExportApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve an export and its verification")
    def get(self, request, export_id: str):
        return Response(export_object(selectors.export_get(request.user, export_id)))


# --- registry ------------------------------------------------------------------------------


class AliasSerializer(serializers.Serializer):
    alias = serializers.CharField(default="production", max_length=50)


class RollbackSerializer(serializers.Serializer):
    alias = serializers.CharField(default="production", max_length=50)
    version = serializers.CharField(required=False, max_length=32,
                                    help_text="The version to move to: 1.4.0, or the N of name@vN.")

    def validate_version(self, value: str) -> str | int:
        if value.isdigit() and int(value) >= 1:
            return int(value)
        if semver_parse(value) is None:
            raise serializers.ValidationError("version must be a version like 1.4.0 (or the N of name@vN)")
        return value


def _name_object(user, name: str) -> dict:
    versions = selectors.registry_versions(user, name)
    aliases = {alias: model.id for model in versions for alias in sorted(a.alias for a in model.aliases.all())}
    return {"object": "registry.model", "name": name, "aliases": aliases,
            "versions": [model_object(m) for m in versions],
            "history": [alias_change_object(c) for c in selectors.alias_history(user, name)]}


class RegistryNamesApi(APIView):
    @extend_schema(responses={200: dict}, summary="List your model names with their versions and aliases")
    def get(self, request):
        data = [{"object": "registry.model", "name": entry["name"], "versions": entry["versions"],
                 "latest": entry["latest"].id, "aliases": {a: m.id for a, m in entry["aliases"].items()}}
                for entry in selectors.registry_names(request.user)]
        return Response({"object": "list", "data": data, "has_more": False})


class RegistryNameApi(APIView):
    @extend_schema(responses={200: dict}, summary="A model name: its versions, aliases and alias history")
    def get(self, request, name: str):
        return Response(_name_object(request.user, name))


class AliasRollbackApi(APIView):
    @extend_schema(request=RollbackSerializer, responses={200: dict},
                   summary="Move an alias back to the version it pointed at before (or to a given version)")
    def post(self, request, name: str):
        selectors.registry_versions(request.user, name)  # 404 for a name the user does not have
        data = RollbackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.alias_rollback(owner=request.user, name=name, **data.validated_data)
        return Response(_name_object(request.user, name))


class ModelPromoteApi(APIView):
    @extend_schema(request=AliasSerializer, responses={200: dict},
                   summary="Point an alias (production, staging, ...) of the model's name at this version")
    def post(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        data = AliasSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.model_promote(model=model, alias=data.validated_data["alias"])
        return Response(model_object(selectors.fine_tuned_model_get(request.user, model.id)))


class ModelArchiveApi(APIView):
    archived = True

    @extend_schema(request=None, responses={200: dict}, summary="Archive a version (no alias may point at it)")
    def post(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        return Response(model_object(services.model_archive(model=model, archived=self.archived)))


class ModelUnarchiveApi(ModelArchiveApi):
    archived = False


class CardSerializer(serializers.Serializer):
    card = serializers.CharField(allow_blank=True, trim_whitespace=False,
                                 help_text="The whole model card, Markdown.")


def card_object(model: FineTunedModel) -> dict:
    return {"object": "model.card", "model": model.id, "version": model.semver, "card": model_card_text(model),
            "edited_at": int(model.card_edited_at.timestamp()) if model.card_edited_at else None}


class ModelCardApi(APIView):
    @extend_schema(responses={200: dict}, summary="A version's model card (Markdown)")
    def get(self, request, model_id: str):
        return Response(card_object(selectors.fine_tuned_model_get(request.user, model_id)))

    @extend_schema(request=CardSerializer, responses={200: dict},
                   summary="Replace a version's model card; its exports from now on carry it as README.md")
    def put(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        data = CardSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(card_object(services.model_card_edit(model=model, card=data.validated_data["card"])))

    patch = put  # the card is one field: a partial update is the whole update


class ModelUsageApi(APIView):
    @extend_schema(responses={200: dict}, summary="A version's chat usage: requests, tokens in and out, "
                                                  "p50/p95 latency (ms) from the inference worker")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        usage = selectors.model_usage(model)
        last = usage.pop("last_request_at")
        return Response({"object": "model.usage", "model": model.id, "version": model.semver, **usage,
                         "last_request_at": int(last.timestamp()) if last else None})


class ModelLineageApi(APIView):
    @extend_schema(responses={200: dict}, summary="Dataset versions → job → checkpoint → version → exports")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        return Response({"object": "model.lineage", "model": model.id, **selectors.model_lineage(model)})


# --- evaluations ---------------------------------------------------------------------------


class EvaluationCreateSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="A base model, a fine-tuned model id, or name@alias / name@1.4.0 / "
                                            "name@1.4 / name@^1 / name@vN.")
    file = serializers.CharField(help_text="A ready dataset (file id) to evaluate on.")
    max_rows = serializers.IntegerField(default=100)
    max_new_tokens = serializers.IntegerField(default=32)
    compare_base = serializers.BooleanField(default=True)
    checkpoints = serializers.BooleanField(default=False)


class EvaluationsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List your evaluations, newest first")
    def get(self, request):
        evaluations = selectors.evaluations_visible_to(request.user)[:100]
        return Response({"object": "list", "data": [evaluation_object(e, rows=False) for e in evaluations],
                         "has_more": False})

    @extend_schema(request=EvaluationCreateSerializer, responses={201: dict},
                   summary="Evaluate a model (and its base, on the same rows) on a dataset")
    def post(self, request):
        data = EvaluationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        model = _named(selectors.model_get, request.user, values.pop("model"), "model")
        dataset = _named(dataset_get, request.user, values.pop("file"), "file")
        evaluation = services.evaluation_create(owner=request.user, model=model, dataset=dataset, **values)
        return Response(evaluation_object(evaluation), status=201)


def _named(get, user, object_id: str, param: str):
    """An object named inside a request body: one that does not exist for the user is a 400 naming
    ``param`` (as job creation's training_file), not a 404 of the URL."""
    try:
        return get(user, object_id)
    except Http404:
        what = "file" if param == "file" else "model"
        raise InvalidRequest(f"No such {what}: {object_id}", param=param, code=f"{what}_not_found") from None


class EvaluationApi(APIView):
    @extend_schema(responses={200: dict}, summary="An evaluation: metrics per model and per-row outputs")
    def get(self, request, evaluation_id: str):
        return Response(evaluation_object(selectors.evaluation_get(request.user, evaluation_id)))


class ModelEvaluationsApi(APIView):
    @extend_schema(responses={200: dict}, summary="The evaluations of a fine-tuned model")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        return Response({"object": "list", "has_more": False,
                         "data": [evaluation_object(e, rows=False) for e in model.evaluations.all()]})


# --- chat completions ------------------------------------------------------------------------

MAX_COMPLETION_TOKENS = 2048
# Passed on to the inference worker as given (workers.inference.GenerateConfig; n: one reply per choice).
GENERATE_PARAMS = ("temperature", "top_p", "seed", "stop", "n", "presence_penalty", "frequency_penalty", "logprobs",
                   "top_logprobs")
# OpenAI's parameters this platform cannot honour: refused when given, never ignored.
UNSUPPORTED_PARAMS = ("logit_bias", "functions", "function_call", "audio", "modalities", "prediction",
                      "web_search_options")
TOOL_CHOICES = ("auto", "none", "required")


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {
    "type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}}]})
class MessageContentField(serializers.Field):
    """A string, or OpenAI's list of text parts (joined)."""

    default_error_messages = {  # braces doubled: DRF formats the message
        "invalid": 'content must be a string or a list of {{"type": "text", "text": ...}} parts'}

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                          and isinstance(p.get("text"), str) for p in data):
            return "".join(p["text"] for p in data)
        self.fail("invalid")

    def to_representation(self, value):
        return value


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant", "tool"], error_messages={
        "invalid_choice": "role must be one of system, user, assistant, tool (developer counts as system)"})
    content = MessageContentField(allow_null=True, required=False)
    tool_calls = serializers.JSONField(required=False, allow_null=True,
                                       help_text="An assistant turn's calls, in OpenAI's shape (its content may "
                                                 "then be null).")
    tool_call_id = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                         help_text="A tool turn: the call it answers.")

    def validate(self, data):
        if data.get("tool_calls") is not None:
            if data["role"] != "assistant":
                raise serializers.ValidationError({"tool_calls": "only an assistant turn has tool_calls"})
            _problem_raise(tool_calls_check(data["tool_calls"], "tool_calls"))
        if data.get("content") is None and not (data["role"] == "assistant" and data.get("tool_calls")):
            raise serializers.ValidationError({"content": "content may be null only in an assistant turn that "
                                                          "has tool_calls"})
        return data


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}],
                     "nullable": True})
class StopField(serializers.Field):
    default_error_messages = {"invalid": "stop must be a string or a list of up to 4 strings"}

    def to_internal_value(self, data):
        stop = [data] if isinstance(data, str) else data
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            self.fail("invalid")
        return [s for s in stop if s]

    def to_representation(self, value):
        return value


class ChatCompletionSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="A base model name, one of your fine-tuned model ids (or name@alias, "
                                            "name@1.4.0, name@^1), "
                                            "or one of your checkpoints (ftckpt-… or ft:…:ckpt-step-N).")
    messages = serializers.ListField(child=ChatMessageSerializer(), min_length=1)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True,
                                         help_text="0 is greedy and deterministic; default 1.")
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    max_tokens = serializers.IntegerField(min_value=1, max_value=MAX_COMPLETION_TOKENS, required=False,
                                          allow_null=True, help_text="Default 64.")
    max_completion_tokens = serializers.IntegerField(min_value=1, max_value=MAX_COMPLETION_TOKENS, required=False,
                                                     allow_null=True, help_text="Same as max_tokens; wins over it.")
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, allow_null=True)
    seed = serializers.IntegerField(min_value=-(2**63), max_value=2**63 - 1, required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_CHOICES,
                                 help_text=f"Choices to generate, 1 to {MAX_CHOICES} (one after another).")
    presence_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False, allow_null=True,
                                              help_text="OpenAI's: lowers the logit of every token already in "
                                                        "the reply by this much.")
    frequency_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False, allow_null=True,
                                               help_text="OpenAI's: lowers a token's logit by this much for "
                                                         "each time the reply already has it.")
    logprobs = serializers.BooleanField(required=False, allow_null=True)
    top_logprobs = serializers.IntegerField(min_value=0, max_value=20, required=False, allow_null=True)
    tools = serializers.JSONField(required=False, allow_null=True,
                                  help_text='Functions the model may call: [{"type": "function", "function": '
                                            '{"name", "description", "parameters"}}], written into the prompt as '
                                            "training writes them; calls come back as message.tool_calls.")
    tool_choice = serializers.JSONField(required=False, allow_null=True,
                                        help_text='"auto" (the default), "none" (the tools are not offered), '
                                                  '"required" (a call to one of them) or {"type": "function", '
                                                  '"function": {"name": ...}} (a call to that one).')
    store = serializers.BooleanField(required=False, default=False,
                                     help_text="OpenAI's: keep the request, the answer and the model version for "
                                               "the data loop (GET /v1/chat/completions); off by default.")
    metadata = serializers.JSONField(required=False, allow_null=True,
                                     help_text="Up to 16 string key-value pairs kept with a stored completion "
                                               "(filter the list by them: metadata[key]=value).")
    response_format = serializers.JSONField(required=False, allow_null=True,
                                            help_text='{"type": "text"} (the default) or {"type": "json_object"}: '
                                                      "decoding is held to one JSON object, closed before "
                                                      "max_tokens; json_schema is refused.")

    def validate_top_p(self, value):
        if value is not None and value <= 0:
            raise serializers.ValidationError("top_p must be greater than 0")
        return value

    def validate_response_format(self, value):
        if value is None:
            return None
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in RESPONSE_FORMATS:
            raise serializers.ValidationError({"type": (
                f"response_format type {kind or value!r} is not supported: use \"text\" or \"json_object\" "
                "(one JSON object, any keys); json_schema is not enforced here, so it is refused")})
        return kind

    def validate_tool_choice(self, value):
        named = isinstance(value, dict) and value.get("type") == "function" and isinstance(
            (value.get("function") or {}).get("name"), str)
        if value is not None and value not in TOOL_CHOICES and not named:
            raise serializers.ValidationError(
                f"tool_choice {value!r} is not supported: use \"auto\" (the model decides), \"none\", "
                "\"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}")
        return value

    def validate_metadata(self, value):
        try:
            return services.metadata_check(value)
        except InvalidRequest as exc:
            raise serializers.ValidationError(exc.message) from None

    def validate(self, data):
        for name in UNSUPPORTED_PARAMS:
            if self.initial_data.get(name) not in (None, [], {}):
                raise serializers.ValidationError({name: f"{name} is not supported by this platform; leave it out"})
        if self.initial_data.get("parallel_tool_calls") not in (None, True):
            raise serializers.ValidationError({"parallel_tool_calls": "a reply may always hold several calls here; "
                                                                      "parallel_tool_calls false cannot be honoured"})
        if data.get("tools") is not None:  # the check training files get: the same rules, one place
            _problem_raise(tools_check(data["tools"] if isinstance(data["tools"], list) else {}))
        choice = data.get("tool_choice")
        if choice not in (None, "auto", "none"):  # a forced call: of one of the tools offered
            names = [t["function"]["name"] for t in data.get("tools") or ()]
            if not names:
                raise serializers.ValidationError({"tool_choice": "a call can only be forced to one of the tools: "
                                                                  "give tools"})
            if isinstance(choice, dict) and choice["function"]["name"] not in names:
                raise serializers.ValidationError({"tool_choice": f"{choice['function']['name']!r} is not one of "
                                                                  f"the tools offered ({', '.join(names)})"})
        if data.get("response_format") == "json_object":
            if data.get("stop"):
                raise serializers.ValidationError({"stop": "stop strings would cut the JSON object: leave stop out "
                                                           "with response_format json_object"})
            if data.get("tools") and data.get("tool_choice") != "none":
                raise serializers.ValidationError({"response_format": "a reply held to JSON cannot call tools: "
                                                                     'leave tools out or set tool_choice "none"'})
        history = [m["role"] for m in data["messages"]]
        for index, message in enumerate(data["messages"]):
            if message["role"] == "tool" and not (index and (history[index - 1] == "tool" or
                                                             data["messages"][index - 1].get("tool_calls"))):
                raise serializers.ValidationError({"messages": {index: {"role": "a tool turn must follow an "
                                                                        "assistant turn with tool_calls"}}})
        if data.get("top_logprobs") and not data.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": "top_logprobs needs logprobs: true"})
        return data

    def generate_config(self) -> dict:
        """``workers.inference.GenerateConfig``'s fields (JSON-ready) from the validated body."""
        data = self.validated_data
        config = {"messages": [{**{key: m[key] for key in ("tool_calls", "tool_call_id") if m.get(key)},
                                "role": "system" if m["role"] == "developer" else m["role"],
                                "content": m.get("content")} for m in data["messages"]]}
        if data.get("tools") and data.get("tool_choice") != "none":
            config["tools"] = data["tools"]
            if data.get("tool_choice") not in (None, "auto"):
                config["tool_choice"] = data["tool_choice"]
        if data.get("response_format") == "json_object":
            config["response_format"] = "json_object"
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        config.update({name: data[name] for name in GENERATE_PARAMS if data.get(name) is not None})
        if max_tokens is not None:
            config["max_tokens"] = max_tokens
        return config


class ImageClassificationSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="A model a vision job made: its id, name@v1, name@1.2.0 or name@alias")
    image = serializers.FileField(help_text="JPEG, PNG or WebP")
    top = serializers.IntegerField(required=False, default=5, help_text="How many classes to return, best first")


class ImageClassificationsApi(APIView):
    parser_classes = [MultiPartParser, FormParser]
    viewer_allowed = True  # inference reads the project's models: a viewer may

    @extend_schema(request={"multipart/form-data": ImageClassificationSerializer}, responses={200: dict},
                   summary="Classify an image with a tuned vision model: its classes, best first, with scores. "
                           "Served by the inference worker, which keeps the classifier loaded (X-Model-Cache: "
                           "hit or miss)")
    def post(self, request):
        form = ImageClassificationSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        answer = services.image_classify(user=request.user, model=data["model"],
                                         image=services.image_read(data["image"]), top=data["top"])
        return Response(answer, headers={"X-Model-Cache": answer.pop("cache")})


class ChatCompletionsApi(APIView):
    viewer_allowed = True  # inference reads the project's models: a viewer may
    @extend_schema(request=ChatCompletionSerializer, responses={200: dict},
                   summary="Chat with a base or fine-tuned model (OpenAI's chat completions; stream: server-sent "
                           "events). Served by the inference worker, which keeps models loaded; the X-Model-Cache "
                           "header says whether this request found its model loaded (hit) or loaded it (miss)")
    def post(self, request):
        body = ChatCompletionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        model = _chat_model(request.user, body.validated_data["model"])
        config = body.generate_config()
        channel, start = services.chat_completion_start(model=model, config=config)
        chunk = _Completion(selectors.model_public_id(model), start["prompt_tokens"])
        if body.validated_data["store"]:
            request_settings = {k: v for k, v in config.items() if k != "messages"}

            def store(done: dict) -> None:
                services.completion_store(owner=request.user, model=model, response=chunk.completion(done),
                                          messages=config["messages"], request=request_settings,
                                          metadata=body.validated_data.get("metadata") or {})
            chunk.on_done = store
        headers = {"X-Model-Cache": start["cache"]}
        if not body.validated_data["stream"]:
            done = services.chat_completion_finish(reply_channel=channel)
            if chunk.on_done:
                chunk.on_done(done)
            return Response(chunk.completion(done), headers=headers)
        include_usage = bool((body.validated_data.get("stream_options") or {}).get("include_usage"))
        # Under daphne (ASGI) the body must be an async iterator to stream: Django reads a sync one
        # to the end before sending anything. Under WSGI (tests' live server) the opposite holds.
        events = (_events_async if isinstance(request._request, ASGIRequest) else _events_sync)(
            channel, chunk, include_usage)
        response = StreamingHttpResponse(events, content_type="text/event-stream", headers=headers)
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # no proxy buffering (nginx)
        return response

    @extend_schema(responses={200: dict}, parameters=[
        OpenApiParameter("model", str, description="the model id asked for, or the version that answered"),
        OpenApiParameter("metadata[key]", str, description="only completions whose metadata has key=value "
                                                             "(repeat for several keys)"),
        OpenApiParameter("rating", str, enum=list(selectors.COMPLETION_RATINGS)),
        OpenApiParameter("created_after", int, description="unix seconds, inclusive"),
        OpenApiParameter("created_before", int, description="unix seconds, exclusive"),
        OpenApiParameter("after", str), OpenApiParameter("limit", int), OpenApiParameter("order", str)],
        operation_id="chat_completions_list",
        summary="List your stored chat completions (store: true, or imported), newest first (order=asc: oldest)")
    def get(self, request):
        found = selectors.stored_completions_filtered(request.user, **completion_filters(request.query_params))
        return Response(cursor_page(request, found, stored_completion_object))


METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")


def completion_filters(params) -> dict:
    """``stored_completions_filtered``'s keyword arguments from query parameters (the API's and the page's)."""
    rating = params.get("rating") or ""
    if rating and rating not in selectors.COMPLETION_RATINGS:
        raise InvalidRequest(f"rating must be one of {', '.join(selectors.COMPLETION_RATINGS)}", param="rating")
    times = {}
    for name in ("created_after", "created_before"):
        raw = params.get(name)
        if raw:
            if not raw.isdigit():
                raise InvalidRequest(f"{name} must be unix seconds", param=name)
            times[name] = datetime.fromtimestamp(int(raw), tz=UTC)
    metadata = {match.group(1): params.get(key) for key in params if (match := METADATA_PARAM.match(key))}
    return {"model": params.get("model") or "", "metadata": metadata, "rating": rating, **times}


RATING_NAMES = {1: "up", -1: "down", None: None}


def stored_completion_object(completion: StoredCompletion) -> dict:
    """OpenAI's stored chat.completion, with the data loop's fields."""
    return {
        "object": "chat.completion", "id": completion.id, "created": int(completion.created_at.timestamp()),
        "model": completion.model, "choices": completion.choices, "usage": completion.usage or None,
        "metadata": completion.metadata, "request_id": None, "service_tier": None, "system_fingerprint": None,
        # extensions
        "model_version": completion.model_version, "source": completion.source,
        "rating": RATING_NAMES[completion.rating], "correction": completion.correction or None,
        "request": completion.request,
        "datasets": sorted(d.pk for d in completion.datasets.all()),
        "expires_at": int(completion.expires_at.timestamp()) if completion.expires_at else None,
    }


def _stored(request, completion_id: str) -> StoredCompletion:
    try:
        return selectors.stored_completion_get(request.user, completion_id)
    except Http404:
        raise NotFound(f"No stored chat completion {completion_id!r} (it does not exist, expired or is not "
                       "yours).", param="completion_id", code="completion_not_found") from None


class StoredCompletionMetadataSerializer(serializers.Serializer):
    metadata = serializers.JSONField(allow_null=True)


class StoredCompletionApi(APIView):
    @extend_schema(responses={200: dict}, operation_id="chat_completions_retrieve",
                   summary="Retrieve a stored chat completion")
    def get(self, request, completion_id: str):
        return Response(stored_completion_object(_stored(request, completion_id)))

    @extend_schema(request=StoredCompletionMetadataSerializer, responses={200: dict},
                   operation_id="chat_completions_update",
                   summary="Replace a stored chat completion's metadata (OpenAI's update)")
    def post(self, request, completion_id: str):
        completion = _stored(request, completion_id)
        body = StoredCompletionMetadataSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        completion = services.stored_completion_metadata_update(completion=completion,
                                                                metadata=body.validated_data["metadata"])
        return Response(stored_completion_object(completion))

    @extend_schema(responses={200: dict}, summary="Delete a stored chat completion")
    def delete(self, request, completion_id: str):
        completion = _stored(request, completion_id)
        services.stored_completion_delete(completion=completion)
        return Response({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})


class StoredCompletionMessagesApi(APIView):
    @extend_schema(responses={200: dict}, summary="The messages of a stored chat completion's request")
    def get(self, request, completion_id: str):
        completion = _stored(request, completion_id)
        data = [{"id": f"{completion.id}-{index}", **message} for index, message in enumerate(completion.messages)]
        return Response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": False})


class StoredCompletionFeedbackSerializer(serializers.Serializer):
    rating = serializers.ChoiceField(choices=["up", "down"], required=False, allow_null=True)
    correction = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)


class StoredCompletionFeedbackApi(APIView):
    @extend_schema(request=StoredCompletionFeedbackSerializer, responses={200: dict},
                   summary="Rate a stored answer (up, down, null clears) and/or correct it (a correction wins in "
                           "datasets made from it)")
    def post(self, request, completion_id: str):
        completion = _stored(request, completion_id)
        body = StoredCompletionFeedbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        completion = services.stored_completion_feedback(completion=completion, **body.validated_data)
        return Response(stored_completion_object(completion))


class CompletionsDatasetSerializer(serializers.Serializer):
    completion_ids = serializers.ListField(child=serializers.CharField(), min_length=1,
                                           help_text="The stored completions to use, in the rows' order.")
    filename = serializers.CharField(required=False, allow_blank=True, max_length=200)


class CompletionsDatasetApi(APIView):
    @extend_schema(request=CompletionsDatasetSerializer, responses={200: dict},
                   summary="Make a new dataset of chat rows from stored completions (corrected answers win), with "
                           "lineage to them; ready for a job or a preparation")
    def post(self, request):
        body = CompletionsDatasetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        dataset = services.completions_dataset_create(owner=request.user, **body.validated_data)
        return Response(dataset_object(dataset))


class CompletionsImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL: chat.completion objects with their request's messages, or "
                                           "{messages} chat rows ending with the assistant's answer.")


class CompletionsImportApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=CompletionsImportSerializer, responses={200: dict},
                   summary="Import conversations from an OpenAI-format export as stored completions")
    def post(self, request):
        body = CompletionsImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        if upload.size > settings.MAX_UPLOAD_BYTES:
            raise InvalidRequest(f"larger than the {settings.MAX_UPLOAD_BYTES} byte limit", param="file",
                                 code="file_too_large")
        made = services.completions_import(owner=request.user, lines=upload.open("rb"))
        return Response({"object": "list", "data": [stored_completion_object(c) for c in made],
                         "imported": len(made)})


class CompletionSettingsSerializer(serializers.Serializer):
    retention_days = serializers.IntegerField(help_text="Days stored completions are kept; 0 keeps them for ever.")


class CompletionSettingsApi(APIView):
    @extend_schema(responses={200: dict}, summary="Your data-loop settings: how long stored completions are kept")
    def get(self, request):
        return Response({"object": "chat.completion.settings",
                         "retention_days": services.completion_retention_days(request.user)})

    @extend_schema(request=CompletionSettingsSerializer, responses={200: dict},
                   summary="Set how long stored completions are kept (applies to those stored already)")
    def post(self, request):
        body = CompletionSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        found = services.completion_settings_update(owner=request.user, **body.validated_data)
        return Response({"object": "chat.completion.settings", "retention_days": found.retention_days})


def _problem_raise(problems: list) -> None:
    """A 400 for the first problem the training-file checks (``workers.formats``) found, its place
    (``tools[0].function.name``) as API params read (``tools.0.function.name``)."""
    if problems:
        _kind, where, message, fix, _severity = problems[0]
        raise serializers.ValidationError({where.replace("[", ".").replace("]", ""): f"{message}; {fix}"})


def _chat_model(user, model_id: str) -> BaseModel | FineTunedModel | Checkpoint:
    try:
        return selectors.chat_model_get(user, model_id)
    except Http404:
        raise NotFound(f"The model {model_id!r} does not exist or you do not have access to it.",
                       param="model", code="model_not_found") from None


class _Completion:
    """OpenAI's chat.completion object and stream chunks for one reply."""

    def __init__(self, model_id: str, prompt_tokens: int) -> None:
        self.on_done = None  # called with the worker's done message (store: true keeps the completion)
        self.id = new_id("chatcmpl", 24)
        self.created = int(time.time())
        self.model = model_id
        self.prompt_tokens = prompt_tokens

    def completion(self, done: dict) -> dict:
        return {**self._head("chat.completion"),
                "choices": [{"index": index, "message": _message(choice), "finish_reason": choice["finish_reason"],
                             "logprobs": _logprobs(choice)}
                            for index, choice in enumerate(done.get("choices") or [done])],
                "usage": self._usage(done)}

    def events(self, message: dict, include_usage: bool) -> list[bytes]:
        """The server-sent events for one worker message (a choice's logprobs come with its last chunk)."""
        kind = message["type"]
        if kind == "inference.delta":
            delta = {"tool_calls": [message["tool_call"]]} if message.get("tool_call") else {"content": message["text"]}
            return [self._event(self._chunk(delta, index=message.get("index", 0)))]
        if kind == "inference.done":
            events = []
            for index, choice in enumerate(message.get("choices") or [message]):
                events.append(self._event(self._chunk({}, finish_reason=choice["finish_reason"], index=index,
                                                      logprobs=_logprobs(choice))))
            if include_usage:
                events.append(self._event({**self._head("chat.completion.chunk"), "choices": [],
                                           "usage": self._usage(message)}))
            return [*events, b"data: [DONE]\n\n"]
        if kind == "inference.error":
            error = services.chat_completion_error(message)
            return [self._event(error_body(error.message, param=error.param, code=error.code, type_="server_error"))]
        return []

    def first_event(self) -> bytes:
        return self._event(self._chunk({"role": "assistant", "content": ""}))

    def timeout_event(self) -> bytes:
        seconds = settings.INFERENCE_TIMEOUT_SECONDS
        return self._event(error_body(f"the inference worker stopped answering for {seconds}s",
                                      code="inference_unavailable", type_="server_error"))

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def _chunk(self, delta: dict, finish_reason: str | None = None, index: int = 0, logprobs: dict | None = None,
               ) -> dict:
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}]}

    def _usage(self, done: dict) -> dict:
        return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
                "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}

    @staticmethod
    def _event(data: dict) -> bytes:
        return f"data: {json.dumps(data)}\n\n".encode()


def _message(choice: dict) -> dict:
    """OpenAI's assistant message: a reply that called tools has them, and its other text (or null)."""
    calls = choice.get("tool_calls")
    if not calls:
        return {"role": "assistant", "content": choice["text"]}
    return {"role": "assistant", "content": choice["text"] or None, "tool_calls": calls}


def _logprobs(choice: dict) -> dict | None:
    return {"content": choice["logprobs"], "refusal": None} if choice.get("logprobs") is not None else None


async def _events_async(channel: str, chunk: _Completion, include_usage: bool):
    yield chunk.first_event()
    while True:
        try:
            message = await reply_receive(channel, settings.INFERENCE_TIMEOUT_SECONDS)
        except TimeoutError:
            yield chunk.timeout_event()
            return
        if message["type"] == "inference.done" and chunk.on_done:
            await sync_to_async(chunk.on_done)(message)
        for event in chunk.events(message, include_usage):
            yield event
        if message["type"] in END_TYPES:
            return


def _events_sync(channel: str, chunk: _Completion, include_usage: bool):
    yield chunk.first_event()
    while True:
        try:
            message = async_to_sync(reply_receive)(channel, settings.INFERENCE_TIMEOUT_SECONDS)
        except TimeoutError:
            yield chunk.timeout_event()
            return
        if message["type"] == "inference.done" and chunk.on_done:
            chunk.on_done(message)
        yield from chunk.events(message, include_usage)
        if message["type"] in END_TYPES:
            return
