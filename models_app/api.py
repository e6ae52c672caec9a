"""The Models API (OpenAI-shaped) and artifact downloads."""

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.files import storage_is_s3
from models_app import selectors, services
from models_app.models import BaseModel, Export, FineTunedModel


def model_object(model: BaseModel | FineTunedModel) -> dict:
    if isinstance(model, BaseModel):
        return {"id": model.name, "object": "model", "created": int(model.created_at.timestamp()),
                "owned_by": "system", "source": model.source, "family": model.family}
    return {
        "id": model.id, "object": "model", "created": int(model.created_at.timestamp()),
        "owned_by": f"user-{model.owner_id}", "base_model": model.base_model.name,
        "fine_tuning_job": model.job_id, "method": model.method,
        "artifacts": ["adapter", *sorted({e.artifact for e in model.exports.all()
                                          if e.status == Export.Status.VERIFIED} - {"adapter"})],
    }


def export_object(export: Export) -> dict:
    finished = int(export.finished_at.timestamp()) if export.finished_at else None
    return {
        "id": export.id, "object": "model.export", "model": export.model_id, "kind": export.kind,
        "quantization": export.quantization, "status": export.status, "progress": export.progress,
        "error": export.error or None, "artifact": export.artifact, "bytes": export.size_bytes,
        "verification": export.verification, "created_at": int(export.created_at.timestamp()),
        "finished_at": finished,
    }


class ModelsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List base models and your fine-tuned models")
    def get(self, request):
        models = [*BaseModel.objects.all(), *selectors.fine_tuned_models_visible_to(request.user)]
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
        model = selectors.fine_tuned_model_get(request.user, model_id)
        name, filename = services.model_artifact_get(model=model,
                                                     artifact=request.query_params.get("artifact", "adapter"))
        if storage_is_s3():
            return HttpResponseRedirect(default_storage.url(name))
        return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename)


class ExportCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Export.Kind.values)
    quantization = serializers.ChoiceField(choices=Export.Quantization.values, required=False)


class ModelExportsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List a fine-tuned model's exports")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        return Response({"object": "list", "data": [export_object(e) for e in model.exports.all()],
                         "has_more": False})

    @extend_schema(request=ExportCreateSerializer, responses={201: dict},
                   summary="Export a fine-tuned model (adapter, merged or gguf); verified before it is offered")
    def post(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        data = ExportCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        export = services.export_create(model=model, **data.validated_data)
        return Response(export_object(export), status=201)


class ExportApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve an export and its verification")
    def get(self, request, export_id: str):
        return Response(export_object(selectors.export_get(request.user, export_id)))
