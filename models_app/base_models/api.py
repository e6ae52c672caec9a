"""REST for base models: register one (a directory, a hub id or an uploaded archive), list, retrieve."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.parsers import JSONParser
from models_app.base_models import selectors, services
from models_app.base_models.models import BaseModel


def base_model_object(base: BaseModel) -> dict:
    return {
        "object": "base_model",
        "id": base.name,
        "name": base.name,
        "status": base.status,
        "error": base.error or None,
        "shared": base.owner_id is None,
        "source": "archive" if base.is_archive else "remote" if base.is_remote else base.source,
        "revision": base.revision or None,
        "architecture": base.architecture or None,
        "family": base.family or None,
        "parameters": base.parameters,
        "context_length": base.context_length or None,
        "chat_template": base.chat_template or None,
        "dtype": base.dtype or None,
        "size_bytes": base.size_bytes,
        "license": base.license or None,
        "shape": base.shape or None,
        "created_at": int(base.created_at.timestamp()),
        "checked_at": int(base.checked_at.timestamp()) if base.checked_at else None,
    }


class BaseModelRegisterSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The name jobs, chat and evaluations use as `model`.")
    source = serializers.CharField(required=False, allow_blank=True,
                                   help_text="An absolute directory on the workers' shared storage, or a hub id "
                                             "org/name; leave out when uploading an archive")
    revision = serializers.CharField(required=False, allow_blank=True, help_text="A hub id's branch, tag or commit")
    file = serializers.FileField(required=False, help_text="A .tar.gz or .zip of a model directory")
    shared = serializers.BooleanField(required=False, default=False,
                                      help_text="Operators only: every user can use it")


class BaseModelsApi(APIView):
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(request=BaseModelRegisterSerializer, responses={200: dict},
                   summary="Register a base model; a worker reads its config and tokenizer (status pending → ready)")
    def post(self, request):
        form = BaseModelRegisterSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        base = services.base_model_register(owner=request.user, name=data["name"], source=data.get("source", ""),
                                            revision=data.get("revision", ""), archive=data.get("file"),
                                            shared=data["shared"])
        return Response(base_model_object(base))

    @extend_schema(responses={200: dict}, summary="List the shared base models and yours")
    def get(self, request):
        bases = selectors.base_models_visible_to(request.user).order_by("name")
        return Response({"object": "list", "data": [base_model_object(b) for b in bases], "has_more": False})


class BaseModelApi(APIView):
    @extend_schema(responses={200: dict}, summary="A base model: status, architecture, parameters, context length, …")
    def get(self, request, name: str):
        return Response(base_model_object(selectors.base_model_get(request.user, name)))


class BaseModelUsageApi(APIView):
    @extend_schema(responses={200: dict}, summary="A base model's chat usage: requests, tokens in and out, "
                                                  "p50/p95 latency (ms) from the inference worker")
    def get(self, request, name: str):
        base = selectors.base_model_get(request.user, name)
        usage = selectors.base_model_usage(base)
        last = usage.pop("last_request_at")
        return Response({"object": "base_model.usage", "model": base.name, **usage,
                         "last_request_at": int(last.timestamp()) if last else None})
