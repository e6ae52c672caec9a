"""The Models API (OpenAI-shaped) and artifact downloads."""

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.files import storage_is_s3
from models_app import selectors, services
from models_app.models import BaseModel, FineTunedModel


def model_object(model: BaseModel | FineTunedModel) -> dict:
    if isinstance(model, BaseModel):
        return {"id": model.name, "object": "model", "created": int(model.created_at.timestamp()),
                "owned_by": "system", "source": model.source, "family": model.family}
    return {
        "id": model.id, "object": "model", "created": int(model.created_at.timestamp()),
        "owned_by": f"user-{model.owner_id}", "base_model": model.base_model.name,
        "fine_tuning_job": model.job_id, "method": model.method, "artifacts": ["adapter"],
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
    @extend_schema(parameters=[OpenApiParameter("artifact", str, enum=["adapter"], default="adapter")],
                   responses={(200, "application/zip"): bytes},
                   summary="Download an artifact as a zip (a redirect to a short-lived URL on S3)")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        name = services.model_artifact_name(model=model, artifact=request.query_params.get("artifact", "adapter"))
        if storage_is_s3():
            return HttpResponseRedirect(default_storage.url(name))
        filename = f"{model.id.replace(':', '_')}-adapter.zip"
        return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=filename)
