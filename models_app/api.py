"""The Models API (OpenAI-shaped) and artifact downloads."""

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.selectors import dataset_get
from finetune_site.files import storage_is_s3
from models_app import selectors, services
from models_app.models import AliasChange, BaseModel, Evaluation, Export, FineTunedModel


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
        # registry extensions
        "name": model.name, "version": model.version, "reference": model.reference,
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


# --- registry ------------------------------------------------------------------------------


class AliasSerializer(serializers.Serializer):
    alias = serializers.CharField(default="production", max_length=50)


class RollbackSerializer(serializers.Serializer):
    alias = serializers.CharField(default="production", max_length=50)
    version = serializers.IntegerField(required=False, min_value=1)


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


class ModelLineageApi(APIView):
    @extend_schema(responses={200: dict}, summary="Dataset versions → job → checkpoint → version → exports")
    def get(self, request, model_id: str):
        model = selectors.fine_tuned_model_get(request.user, model_id)
        return Response({"object": "model.lineage", "model": model.id, **selectors.model_lineage(model)})


# --- evaluations ---------------------------------------------------------------------------


class EvaluationCreateSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="A base model, a fine-tuned model id, or name@alias / name@vN.")
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
        model = selectors.model_get(request.user, values.pop("model"))
        dataset = dataset_get(request.user, values.pop("file"))
        evaluation = services.evaluation_create(owner=request.user, model=model, dataset=dataset, **values)
        return Response(evaluation_object(evaluation), status=201)


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
