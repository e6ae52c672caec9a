"""The Files API (OpenAI-shaped): a file here is a Dataset."""

from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app import selectors, services
from datasets_app.models import Dataset
from finetune_site.pagination import cursor_page

OPENAI_STATUS = {
    Dataset.Status.UPLOADED: "uploaded",
    Dataset.Status.VALIDATING: "uploaded",
    Dataset.Status.READY: "processed",
    Dataset.Status.INVALID: "error",
}


def file_object(dataset: Dataset) -> dict:
    return {
        "object": "file",
        "id": dataset.id,
        "bytes": dataset.byte_size,
        "created_at": int(dataset.created_at.timestamp()),
        "filename": dataset.filename,
        "purpose": dataset.purpose,
        "status": OPENAI_STATUS[dataset.status],
        "status_details": None,
        "expires_at": None,
        # extensions
        "format": dataset.format,
        "rows": dataset.row_count,
        "sha256": dataset.sha256,
    }


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    purpose = serializers.CharField()


class FilesApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=FileUploadSerializer, responses={200: dict}, summary="Upload a JSONL training file")
    def post(self, request):
        form = FileUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        dataset = services.dataset_upload(owner=request.user, upload=form.validated_data["file"],
                                          purpose=form.validated_data["purpose"])
        return Response(file_object(dataset))

    @extend_schema(responses={200: dict}, summary="List your files, newest first")
    def get(self, request):
        files = selectors.datasets_visible_to(request.user)
        purpose = request.query_params.get("purpose")
        if purpose:
            files = files.filter(purpose=purpose)
        return Response(cursor_page(request, files, file_object))


class FileApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a file")
    def get(self, request, file_id: str):
        return Response(file_object(selectors.dataset_get(request.user, file_id)))

    @extend_schema(responses={200: dict}, summary="Delete a file not used by any job")
    def delete(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        services.dataset_delete(dataset=dataset)
        return Response({"object": "file", "id": file_id, "deleted": True})


class FileContentApi(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): bytes}, summary="Download a file's content")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        return FileResponse(dataset.file.open("rb"), as_attachment=True, filename=dataset.filename)
