"""The Files API (OpenAI-shaped: a file here is a Dataset) and the dataset extras under /v1/datasets."""

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app import selectors, services
from datasets_app.models import Dataset, DatasetUpload, TokenStats
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.pagination import cursor_page
from finetune_site.parsers import JSONParser
from finetune_site.serializers import KnownFieldsSerializer
from models_app.base_models.selectors import base_model_named

OPENAI_STATUS = {
    Dataset.Status.UPLOADED: "uploaded",
    Dataset.Status.VALIDATING: "uploaded",
    Dataset.Status.READY: "processed",
    Dataset.Status.INVALID: "error",
}
PREVIEW_MAX = 100


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def file_object(dataset: Dataset) -> dict:
    report = dataset.validation_report or {}
    return {
        "object": "file",
        "id": dataset.id,
        "bytes": dataset.byte_size,
        "created_at": _ts(dataset.created_at),
        "filename": dataset.filename,
        "purpose": dataset.purpose,
        "status": OPENAI_STATUS[dataset.status],
        "status_details": report.get("summary") or None if dataset.status == Dataset.Status.INVALID else None,
        "expires_at": None,
        # extensions
        "format": dataset.format,
        "rows": dataset.row_count,
        "sha256": dataset.sha256,
        "dataset_status": dataset.status,
        "progress": dataset.progress,
        "container": dataset.container,
        "duplicate_of": dataset.duplicate_of_id,
        "name": dataset.display_name,
        "description": dataset.description,
        "tags": dataset.tags,
    }


def dataset_object(dataset: Dataset) -> dict:
    report = dataset.validation_report or {}
    return {
        **file_object(dataset),
        "object": "dataset",
        "status": dataset.status,
        "openai_status": OPENAI_STATUS[dataset.status],
        "training_format": dataset.training_format,
        "options": dataset.options,
        "validated_at": _ts(dataset.validated_at),
        "report": {key: report.get(key) for key in ("ok", "error_count", "warning_count", "summary")} if report
        else None,
        "stats": dataset.stats or None,
        "quality": {**dataset.quality, "status": dataset.quality_status} if dataset.quality_status else None,
        "parent": dataset.parent_id,
        "operations": dataset.operations,
    }


def upload_object(upload: DatasetUpload) -> dict:
    return {
        "object": "dataset.upload",
        "id": upload.id,
        "filename": upload.filename,
        "purpose": upload.purpose,
        "status": upload.status,
        "bytes": upload.expected_bytes,
        "offset": upload.received,
        "sha256": upload.expected_sha256 or None,
        "options": upload.options,
        "created_at": _ts(upload.created_at),
        "dataset": dataset_object(upload.dataset) if upload.dataset else None,
        # recognised at creation by its sha256: no byte was sent
        "duplicate": bool(upload.dataset and upload.dataset.created_at < upload.created_at),
    }


@extend_schema_field({"oneOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "string"}]})
class ColumnMapField(serializers.Field):
    """A JSON object, or text like ``question→prompt, answer→completion`` (multipart forms send text)."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


class OptionsSerializer(serializers.Serializer):
    format = serializers.CharField(required=False, allow_blank=True,
                                   help_text="chat | alpaca | prompt_completion | text | preference | "
                                             "unpaired_preference | prompt_only; default detected")
    container = serializers.CharField(required=False, allow_blank=True,
                                      help_text="jsonl | json | csv | tsv | parquet | txt | zip | gzip; default "
                                                "from the file name")
    column_map = ColumnMapField(required=False, help_text='{"question": "prompt"} or "question→prompt,…"')

    def options(self) -> dict:
        data = self.validated_data
        return services.dataset_options_clean(container=data.get("container"), format=data.get("format"),
                                              column_map=data.get("column_map"))


class FileUploadSerializer(OptionsSerializer):
    file = serializers.FileField(allow_empty_file=True)
    purpose = serializers.CharField()


LIST_FILTERS = [
    OpenApiParameter("purpose", str, description="fine-tune, vision, ..."),
    OpenApiParameter("status", str, description="uploaded | validating | ready | invalid"),
    OpenApiParameter("search", str, description="part of the name or filename, any case"),
    OpenApiParameter("tag", str, description="one tag, exactly"),
]


class FilesApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=FileUploadSerializer, responses={200: dict},
                   summary="Upload a training file (JSONL, JSON, CSV/TSV, Parquet, text, or a ZIP/.gz of one), or with "
                           "purpose=vision a ZIP/tar of class folders of images")
    def post(self, request):
        form = FileUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        dataset = services.dataset_upload(owner=request.user, upload=form.validated_data["file"],
                                          purpose=form.validated_data["purpose"], options=form.options())
        return Response(file_object(dataset))

    @extend_schema(parameters=LIST_FILTERS, responses={200: dict}, summary="List your files, newest first")
    def get(self, request):
        files = selectors.datasets_filter(selectors.datasets_visible_to(request.user), request.query_params)
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
        if not dataset.file.name:  # a prepared version still being made
            raise Conflict(f"{file_id} is {dataset.status} and has no content yet", param="file_id",
                           code="no_content")
        return FileResponse(dataset.file.open("rb"), as_attachment=True, filename=dataset.filename)


# --- /v1/datasets extras --------------------------------------------------------------------------

class CatalogSerializer(KnownFieldsSerializer):
    name = serializers.JSONField(required=False, help_text="Your name for it (at most 200 characters)")
    description = serializers.JSONField(required=False)
    tags = serializers.JSONField(required=False, help_text='e.g. ["pets", "v2"]: lower-case, at most 20')


class DatasetApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(responses={200: dict}, summary="A dataset: status, validation progress, report summary, stats")
    def get(self, request, file_id: str):
        return Response(dataset_object(selectors.dataset_get(request.user, file_id)))

    @extend_schema(request=CatalogSerializer, responses={200: dict},
                   summary="Name, describe or tag a dataset (the fields sent change; the owner only)")
    def patch(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        form = CatalogSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(dataset_object(services.dataset_catalog_update(dataset=dataset, **form.validated_data)))


class DatasetReportApi(APIView):
    @extend_schema(responses={200: dict}, summary="The full validation report: every kind of problem, counted, "
                                                  "with examples (line/row, field, message, fix)")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        return Response({"object": "dataset.report", "id": dataset.id, "status": dataset.status,
                         "progress": dataset.progress, **(dataset.validation_report or {})})


class DatasetPreviewApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("offset", int), OpenApiParameter("limit", int)],
                   responses={200: dict}, summary="Rows as the trainer reads them, a page at a time")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        offset = _int_param(request, "offset", 0, 0, 2**62)
        limit = _int_param(request, "limit", 20, 1, PREVIEW_MAX)
        rows = selectors.dataset_rows(dataset, offset=offset, limit=limit)
        return Response({"object": "list", "data": rows, "offset": offset, "limit": limit,
                         "total": dataset.row_count, "has_more": offset + len(rows) < dataset.row_count})


def _int_param(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return int(raw)


class DatasetValidateApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(request=OptionsSerializer, responses={200: dict},
                   summary="Check an invalid dataset again with other options (format, container, column_map)")
    def post(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        form = OptionsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(dataset_object(services.dataset_revalidate(dataset=dataset, options=form.options())))


class DatasetVersionsApi(APIView):
    @extend_schema(responses={200: dict}, summary="The dataset's lineage: ancestors, itself, versions made from it")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        return Response({"object": "list", "data": [dataset_object(d) for d in selectors.dataset_versions(dataset)]})


# --- resumable uploads ------------------------------------------------------------------------------

class HubDatasetSerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=["hub"], help_text='"hub": the rows of a hub dataset\'s split.')
    hub_id = serializers.CharField(help_text="The hub dataset, org/name.")
    split = serializers.CharField(default="train", help_text="The split to fetch; default train.")
    revision = serializers.CharField(required=False, allow_blank=True, default="",
                                     help_text="A branch, tag or commit; default the main branch.")


class DatasetsApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(parameters=LIST_FILTERS, responses={200: dict},
                   summary="List your datasets (not jobs' result files), newest first, filtered")
    def get(self, request):
        datasets = selectors.datasets_filter(selectors.datasets_listed(request.user), request.query_params)
        return Response(cursor_page(request, datasets, dataset_object))

    @extend_schema(request=HubDatasetSerializer, responses={200: dict},
                   summary="Make a dataset from a hub dataset's split (a worker fetches and checks it)")
    def post(self, request):
        form = HubDatasetSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        dataset = services.dataset_hub_create(owner=request.user, hub_id=data["hub_id"], split=data["split"],
                                              revision=data["revision"])
        return Response(dataset_object(dataset))


class UploadCreateSerializer(OptionsSerializer):
    filename = serializers.CharField()
    purpose = serializers.CharField(default="fine-tune")
    bytes = serializers.IntegerField(required=False, min_value=1, help_text="Total size, if known.")
    sha256 = serializers.CharField(required=False, allow_blank=True,
                                   help_text="Of the whole file, if known: content already uploaded is recognised.")


class UploadsApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(request=UploadCreateSerializer, responses={200: dict},
                   summary="Start a resumable upload (then PUT chunks, then complete)")
    def post(self, request):
        form = UploadCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        upload = services.upload_create(owner=request.user, filename=data["filename"], purpose=data["purpose"],
                                        options=form.options(), bytes=data.get("bytes"),
                                        sha256=data.get("sha256", ""))
        return Response(upload_object(upload))


class UploadApi(APIView):
    @extend_schema(responses={200: dict}, summary="Where an upload stands: resume from its offset")
    def get(self, request, upload_id: str):
        return Response(upload_object(selectors.upload_get(request.user, upload_id)))

    @extend_schema(responses={200: dict}, summary="Cancel an open upload")
    def delete(self, request, upload_id: str):
        upload = selectors.upload_get(request.user, upload_id)
        return Response(upload_object(services.upload_cancel(upload_id=upload.id, owner=request.user)))


class UploadChunkApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("offset", int, description="Byte offset of this chunk; must equal the "
                                     "upload's offset (or send the Upload-Offset header)"),
                    OpenApiParameter("X-Chunk-Sha256", str, location=OpenApiParameter.HEADER, required=False)],
        request={"application/octet-stream": bytes}, responses={200: dict},
        summary="Append a chunk of raw bytes at offset")
    def put(self, request, upload_id: str):
        upload = selectors.upload_get(request.user, upload_id)
        raw = request.query_params.get("offset", request.headers.get("Upload-Offset"))
        if raw is None or not str(raw).isdigit():
            raise InvalidRequest("offset (query) or Upload-Offset (header) must give the chunk's byte offset",
                                 param="offset")
        if request.stream is None:  # no body, or a body without Content-Length (chunked transfer encoding)
            raise InvalidRequest("send the chunk's bytes as the body, with a Content-Length", param="chunk",
                                 code="empty_chunk")
        upload = services.upload_chunk_append(upload_id=upload.id, owner=request.user, offset=int(raw),
                                              stream=request.stream,
                                              chunk_sha256=request.headers.get("X-Chunk-Sha256", ""))
        return Response(upload_object(upload))

    post = put


class UploadCompleteSerializer(serializers.Serializer):
    sha256 = serializers.CharField(required=False, allow_blank=True)


class UploadCompleteApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(request=UploadCompleteSerializer, responses={200: dict},
                   summary="Finish an upload: the file becomes a dataset and is validated by a worker")
    def post(self, request, upload_id: str):
        upload = selectors.upload_get(request.user, upload_id)
        form = UploadCompleteSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        upload = services.upload_complete(upload_id=upload.id, owner=request.user,
                                          sha256=form.validated_data.get("sha256", ""))
        return Response(upload_object(upload))


def _base_model(request, data=None):
    name = (data if data is not None else request.query_params).get("model") or settings.DATASET_STATS_MODEL
    return base_model_named(name, user=request.user)


def _max_length(request, base) -> int:
    return _int_param(request, "max_length", min(1024, base.context_length), 1, base.context_length)


class StatsRequestSerializer(serializers.Serializer):
    model = serializers.CharField(required=False, help_text="base model (default DATASET_STATS_MODEL)")
    template = serializers.CharField(required=False, allow_blank=True, default="",
                                     help_text="'' (the model's own), chatml, llama3, mistral, alpaca or completion")


class DatasetStatsApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(parameters=[OpenApiParameter("model", str, description="base model (default DATASET_STATS_MODEL)"),
                               OpenApiParameter("template", str, description="'' (the model's own), chatml, llama3, "
                                                "mistral, alpaca or completion"),
                               OpenApiParameter("max_length", int)],
                   responses={200: dict, 202: dict},
                   summary="Token statistics with the base model's tokenizer: ready (200), computing (202), failed "
                           "or not_computed (200; POST to count)")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        base = _base_model(request)
        template = request.query_params.get("template", "")
        services.token_stats_check(dataset, template)
        stats = services.token_stats_current(owner=request.user, dataset=dataset, base_model=base, template=template)
        return _stats_response(request, dataset, base, template, stats)

    @extend_schema(request=StatsRequestSerializer, responses={200: dict, 202: dict},
                   summary="Count the tokens (a worker does it; 202 until ready); a failed count starts again")
    def post(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        form = StatsRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        base = _base_model(request, form.validated_data)
        template = form.validated_data["template"]
        stats = services.token_stats_request(dataset=dataset, base_model=base, template=template)
        return _stats_response(request, dataset, base, template, stats)


def _stats_response(request, dataset: Dataset, base, template: str, stats: TokenStats | None) -> Response:
    body = {"object": "dataset.stats", "id": dataset.id, "model": base.name, "template": template,
            "status": stats.status if stats else "not_computed"}
    if stats is None:
        return Response({**body, "message": f"not counted yet: POST /v1/datasets/{dataset.id}/stats "
                                            f'{{"model": "{base.name}", "template": "{template}"}}'})
    if stats.status == TokenStats.Status.FAILED:
        return Response({**body, "error": stats.error})
    if stats.status != TokenStats.Status.READY:
        return Response(body, status=202)
    summary = services.token_stats_summary(stats, max_length=_max_length(request, base),
                                           context_length=base.context_length)
    return Response({**body, **summary})


class DatasetDryRunApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("model", str), OpenApiParameter("template", str),
                               OpenApiParameter("max_length", int), OpenApiParameter("rows", int),
                               OpenApiParameter("offset", int)],
                   responses={200: dict},
                   summary="Render rows exactly as the trainer will, marking the tokens that carry loss")
    def get(self, request, file_id: str):
        from workers.templates import TEMPLATE_NAMES

        dataset = selectors.dataset_get(request.user, file_id)
        base = _base_model(request)
        template = request.query_params.get("template", "")
        if template not in TEMPLATE_NAMES:
            raise InvalidRequest(f"template must be one of {', '.join(repr(t) for t in TEMPLATE_NAMES)}",
                                 param="template")
        if dataset.status != Dataset.Status.READY or not dataset.training_format:
            raise InvalidRequest(f"{dataset.id} is {dataset.status} ({dataset.format or 'no format'}); a dry run "
                                 "needs a ready dataset of chat, alpaca, prompt/completion or text rows",
                                 param="file_id", code="dataset_not_ready")
        result = selectors.dataset_dry_run(dataset, base_model=base, template=template,
                                           max_length=_max_length(request, base),
                                           rows=_int_param(request, "rows", 3, 1, 20),
                                           offset=_int_param(request, "offset", 0, 0, 2**62))
        return Response({"object": "dataset.dry_run", "id": dataset.id, "model": base.name, **result})


class QualityRequestSerializer(serializers.Serializer):
    validation_file = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    near_threshold = serializers.FloatField(required=False, allow_null=True)


class DatasetQualityApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(responses={200: dict}, summary="Quality report: exact and near duplicates, PII, train/validation "
                                                  "overlap, empty turns, very long rows")
    def get(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        return Response(_quality_object(dataset), status=202 if dataset.quality_status == "computing" else 200)

    @extend_schema(request=QualityRequestSerializer, responses={202: dict},
                   summary="Run the quality checks again (against a validation file, with another threshold)")
    def post(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        form = QualityRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        validation_id = form.validated_data.get("validation_file")
        validation = None
        if validation_id:
            validation = selectors.datasets_visible_to(request.user).filter(pk=validation_id).first()
            if validation is None:
                raise InvalidRequest(f"No such file: {validation_id}", param="validation_file", code="file_not_found")
        dataset = services.dataset_quality_request(dataset=dataset, validation=validation,
                                                   near_threshold=form.validated_data.get("near_threshold"))
        return Response(_quality_object(dataset), status=202)


def _quality_object(dataset: Dataset) -> dict:
    return {"object": "dataset.quality", "id": dataset.id, **dataset.quality,
            "status": dataset.quality_status or "not_computed"}


class PrepareSerializer(serializers.Serializer):
    operations = serializers.ListField(child=serializers.DictField(), allow_empty=True, help_text=(
        'In order, e.g. [{"op": "dedup", "near": true}, {"op": "mask_pii"}, {"op": "filter_length", '
        '"max_chars": 8000}, {"op": "filter_length", "max_tokens": 1024, "model": "tiny-llama", "template": ""}, '
        '{"op": "convert", "to": "chat"}, {"op": "map_columns", "column_map": {...}}, '
        '{"op": "split", "validation_share": 0.1, "seed": 42}]. filter_length counts characters with '
        'min_chars/max_chars, and tokens with min_tokens/max_tokens under the named base model\'s tokenizer and '
        'template, rendered as the trainer will.'))


class DatasetPrepareApi(APIView):
    parser_classes = [JSONParser]

    @extend_schema(request=PrepareSerializer, responses={200: dict},
                   summary="Make a new version (or train + validation versions) with lineage; the original stays")
    def post(self, request, file_id: str):
        dataset = selectors.dataset_get(request.user, file_id)
        form = PrepareSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        versions = services.dataset_prepare(dataset=dataset, operations=form.validated_data["operations"])
        return Response({"object": "list", "data": [dataset_object(v) for v in versions]})
