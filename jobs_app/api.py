"""The fine-tuning jobs API, shaped after OpenAI's."""

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.errors import InvalidRequest, NotFound
from finetune_site.pagination import cursor_page
from finetune_site.serializers import KnownFieldsSerializer, unknown_keys_problem
from jobs_app import selectors, services
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Provider
from jobs_app.services.tracking import job_tracking
from jobs_app.sse import job_events_stream, last_event_seq
from workers.hyperparameters import (
    GRADED_OBJECTIVES,
    OBJECTIVES,
    OPENAI_NAMES,
    hyperparameters_schema,
    options_markdown,
)


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def job_object(job: FineTuneJob) -> dict:
    hp = job.hyperparameters
    # a local job's model id is known from the start and stays on the job after the model is deleted (as OpenAI)
    succeeded = job.status == FineTuneJob.Status.SUCCEEDED
    local_model = job.fine_tuned_model_name if succeeded and not job.provider_id else None
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.base_model.name,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "fine_tuned_model": job.remote_model or local_model,
        "organization_id": services.account_of(job.project_id),
        "result_files": [job.result_file_id] if job.result_file_id else [],
        "status": job.status,
        "validation_file": job.validation_dataset_id,
        "training_file": job.dataset_id,
        "hyperparameters": {key: hp.get(key) for key in OPENAI_NAMES},
        "trained_tokens": job.trained_tokens,
        "error": job.error,
        "user_provided_suffix": job.suffix or None,
        "seed": job.seed,
        "estimated_finish": _ts(job.estimated_finish) if job.status == FineTuneJob.Status.RUNNING else None,
        "integrations": job.integrations or [],
        "metadata": job.metadata or None,
        "method": {"type": job.objective, job.objective: {"hyperparameters": hp,
                                                          **({"grader": job.grader} if job.grader else {})}},
        # extensions
        "provider": job.provider.name if job.provider_id else "local",
        "remote_job_id": job.remote_job_id or None,
        "remote_status": job.metrics.get("remote_status") if job.provider_id else None,
        "cost": job.cost or None,  # what the run cost (a remote job: the provider's tokens × the price table)
        "attempt": job.attempt,
        "preference_file": job.preference_dataset_id,  # rlaif: the judged pairs DPO trained on
        "max_attempts": job.max_attempts,
        "started_at": _ts(job.started_at),
        "metrics": job.metrics,
        "estimate": job.estimate,
        "wait_reason": job.wait_reason or None,
        "promotion_gate": job.promotion_gate or None,
        "evaluate_checkpoints": job.evaluate_checkpoints,
        "version": job.version or None,  # the registry version asked for; None: by the bump rule
        "tracking": job_tracking(job),  # where each tracker of integrations holds the run
        "vision": job.vision or None,  # vision: {strategy, design, evaluation} once trained
    }


def event_object(event: JobEvent) -> dict:
    return {
        "object": "fine_tuning.job.event",
        "id": event.id,
        "created_at": _ts(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "type": event.type,
        "seq": event.seq,
        "request_id": event.request_id or None,  # extension: the X-Request-ID it was written for
    }


def checkpoint_object(checkpoint: Checkpoint) -> dict:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": _ts(checkpoint.created_at),
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "step_number": checkpoint.step,
        "metrics": {"step": checkpoint.step, **checkpoint.metrics},
        "is_best": checkpoint.is_best,
    }


GRADER_SCHEMA = {"type": "object", "description": (
    "What scores each sample (OpenAI's graders): string_check, text_similarity, multi or score_model. Text "
    "fields read {{sample.output_text}} and {{item.<field>}} (a field of the row).")}
# The shape of ``method``: the objective, and its options as declared in workers.hyperparameters.
METHOD_SCHEMA = {
    "type": "object",
    "description": "The objective (``type``) and its hyperparameters; each may be \"auto\". Reinforcement and "
                   "rlaif also take their grader.",
    "properties": {"type": {"type": "string", "enum": list(OBJECTIVES), "default": "supervised"},
                   **{name: {"type": "object", "properties": {
                       "hyperparameters": hyperparameters_schema(name),
                       **({"grader": GRADER_SCHEMA} if name in GRADED_OBJECTIVES else {})}}
                      for name in OBJECTIVES}},
}


MAX_NAME_CHARS = 512  # a model's name or a file's id; the longest real one is a fine-tuned model's, ~100


@extend_schema_field(METHOD_SCHEMA)
class MethodField(serializers.DictField):
    pass


class JobCreateSerializer(KnownFieldsSerializer):
    # Bounded: a refusal quotes the name it could not find, and should not quote megabytes back.
    model = serializers.CharField(max_length=MAX_NAME_CHARS)
    training_file = serializers.CharField(max_length=MAX_NAME_CHARS)
    validation_file = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                            max_length=MAX_NAME_CHARS)
    hyperparameters = serializers.DictField(required=False, help_text="Deprecated: use method.")
    method = MethodField(required=False)
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)
    version = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=32,
                                    help_text="The registry version of the model the job makes (1.4.0), greater "
                                              "than its name's newest; default: bumped by rule.")
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1)
    integrations = serializers.ListField(
        required=False, allow_null=True, child=serializers.JSONField(),
        help_text='Experiment trackers: {"type": "wandb", "wandb": {"project": ...}}, {"type": "mlflow", '
                  '"mlflow": {"tracking_uri": ..., "experiment": ...}} or {"type": "tensorboard"}.')
    metadata = serializers.JSONField(required=False, allow_null=True,
                                     help_text="Up to 16 string values, e.g. {\"team\": \"support\"}; "
                                               "filter jobs.list by them (?metadata[team]=support).")
    promotion_gate = serializers.JSONField(
        required=False, allow_null=True,
        help_text='Promote the tuned model only if it beats its base on the validation file, e.g. '
                  '{"metric": "eval_loss", "min_improvement": 0.05, "alias": "production"} or '
                  '{"metric": "accuracy", "threshold": 0.9}.')
    evaluate_checkpoints = serializers.BooleanField(
        required=False, default=False, help_text="Also evaluate every checkpoint and mark the best.")
    provider = serializers.CharField(required=False, default="local",
                                     help_text="Where the job runs: local (this platform's workers) or a "
                                               "provider's name (GET /v1/providers); the openai client sends it "
                                               "with extra_body.")


METHOD_SECTION_KEYS = ("hyperparameters", "grader")


def _method_from(data: dict) -> tuple[str, dict, dict | None]:
    """The objective, its hyperparameters (``method.<type>``, or the deprecated top-level key) and its
    grader (reinforcement)."""
    method = data.get("method") or {}
    objective = method.get("type", FineTuneJob.Objective.SUPERVISED)
    if objective not in OBJECTIVES:
        raise InvalidRequest(f"method.type {objective!r} is not supported; use one of {', '.join(OBJECTIVES)}",
                             param="method.type")
    section = method.get(objective) or {}
    if not isinstance(section, dict) or not isinstance(section.get("hyperparameters", {}), dict):
        raise InvalidRequest(f"method.{objective}.hyperparameters must be an object",
                             param=f"method.{objective}.hyperparameters")
    # Another objective's section, or a key misspelt, would be dropped silently: its options never applied.
    problem = (unknown_keys_problem({k: v for k, v in method.items() if v is not None}, {"type", objective}, "method")
               or unknown_keys_problem(section, METHOD_SECTION_KEYS, f"method.{objective}"))
    if problem:
        raise InvalidRequest(problem[1], param=problem[0], code="unknown_parameter")
    grader = section.get("grader")
    if grader is not None and not isinstance(grader, dict):
        raise InvalidRequest(f"method.{objective}.grader must be an object", param=f"method.{objective}.grader",
                             code="invalid_grader")
    return objective, {**(data.get("hyperparameters") or {}), **section.get("hyperparameters", {})}, grader


HYPERPARAMETER_DOCS = (
    "`method.type` is the objective: " + "; ".join(f"`{k}`: {v}" for k, v in OBJECTIVES.items()) +
    ". Its options go in `method.<type>.hyperparameters`; each may be \"auto\" (the default), and an option "
    "that does not apply to the objective or adapter is refused:\n\n" + options_markdown())


class JobsApi(APIView):
    @extend_schema(request=JobCreateSerializer, responses={200: dict}, summary="Create a fine-tuning job",
                   description=HYPERPARAMETER_DOCS, examples=[OpenApiExample("LoRA on tiny-llama", value={
                       "model": "tiny-llama", "training_file": "file-abc123",
                       "method": {"type": "supervised", "supervised": {"hyperparameters": {
                           "n_epochs": 3, "adapter": "lora", "lora_r": 16, "learning_rate": 0.001}}}})])
    def post(self, request):
        form = JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(job_object(services.job_create(owner=request.user, **job_request_args(form.validated_data))))

    @extend_schema(parameters=[OpenApiParameter("metadata[key]", str, description="Only jobs whose metadata has "
                                                "this value at key (repeat for several keys)")],
                   responses={200: dict}, summary="List your fine-tuning jobs, newest first")
    def get(self, request):
        jobs = selectors.jobs_with_metadata(selectors.jobs_visible_to(request.user), _metadata_filter(request))
        return Response(cursor_page(request, jobs, job_object))


def job_request_args(data: dict) -> dict:
    """The service's keyword arguments from a checked creation body (creation and the estimate share it)."""
    objective, hyperparameters, grader = _method_from(data)
    return dict(training_file=data["training_file"], model=data["model"],
                validation_file=data.get("validation_file") or None, objective=objective,
                hyperparameters=hyperparameters, suffix=data.get("suffix") or "", seed=data.get("seed"),
                promotion_gate=data.get("promotion_gate"), evaluate_checkpoints=data["evaluate_checkpoints"],
                grader=grader, metadata=data.get("metadata"), integrations=data.get("integrations"),
                provider=data["provider"], version=data.get("version") or "")


class JobEstimateApi(APIView):
    @extend_schema(request=JobCreateSerializer, responses={200: dict}, summary="Estimate a job's tokens and cost",
                   description="Takes the body of job creation (checked the same way: the same 400s) and an "
                               "optional provider; creates nothing. Returns the training tokens (per epoch × "
                               "epochs), the time where past runs give a pace, and the cost from the price "
                               "table: per million tokens for remote providers, per device-hour for local "
                               "workers (amount null, with a reason, where the table or the time is unknown).")
    def post(self, request):
        form = JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(services.job_price_estimate(owner=request.user, **job_request_args(form.validated_data)))


def _metadata_filter(request) -> dict:
    """``?metadata[key]=value`` pairs (as the openai client sends ``metadata={...}``)."""
    return {name[len("metadata["):-1]: value for name, value in request.query_params.items()
            if name.startswith("metadata[") and name.endswith("]")}


class JobApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a fine-tuning job")
    def get(self, request, job_id: str):
        return Response(job_object(selectors.job_get(request.user, job_id)))


class JobCancelApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Cancel a job that has not finished")
    def post(self, request, job_id: str):
        job = services.job_cancel(job=selectors.job_get(request.user, job_id))
        return Response(job_object(job))


class JobEventsApi(APIView):
    @extend_schema(parameters=[OpenApiParameter("stream", bool, description=(
        "true: Server-Sent Events (text/event-stream) instead of a page: each event as `id: <seq>` and "
        "`data: <event JSON>`, oldest first, as they are written; send `Last-Event-ID` to resume after one. "
        "After the job finishes and its last event, `event: end` closes the stream."))],
        responses={200: dict}, summary="List a job's events, newest first (or stream them)")
    def get(self, request, job_id: str):
        job = selectors.job_get(request.user, job_id)
        if request.query_params.get("stream", "").lower() in {"true", "1"}:
            after = last_event_seq(request.headers.get("Last-Event-ID"))
            response = StreamingHttpResponse(job_events_stream(job.id, after=after, render=event_object),
                                             content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
            return response
        return Response(cursor_page(request, job.events.all(), event_object, order=("seq",)))


class JobTensorboardApi(APIView):
    @extend_schema(responses={(200, "application/gzip"): bytes}, summary="Download a job's TensorBoard event files")
    def get(self, request, job_id: str):
        job = selectors.job_get(request.user, job_id)
        archive = services.job_tensorboard_archive(job)
        if archive is None:
            raise NotFound(f"{job.id} has no TensorBoard event files (it names no tensorboard integration, "
                           "or has not trained yet)", code="not_found")
        response = HttpResponse(archive, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="tensorboard_{job.id}.tar.gz"'
        return response


class JobCheckpointsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List a job's checkpoints, newest first")
    def get(self, request, job_id: str):
        job = selectors.job_get(request.user, job_id)
        checkpoints = job.checkpoints.select_related("job__owner", "job__base_model")
        return Response(cursor_page(request, checkpoints, checkpoint_object, order=("step",)))


class JobPauseApi(APIView):
    @extend_schema(request=None, responses={200: dict},
                   summary="Pause a job: at once when queued, after a checkpoint when running")
    def post(self, request, job_id: str):
        return Response(job_object(services.job_pause(job=selectors.job_get(request.user, job_id))))


class JobResumeApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Resume a paused job from its last checkpoint")
    def post(self, request, job_id: str):
        return Response(job_object(services.job_resume(job=selectors.job_get(request.user, job_id))))


class GraderRunSerializer(serializers.Serializer):
    grader = serializers.JSONField(help_text=GRADER_SCHEMA["description"])
    model_sample = serializers.CharField(allow_blank=True, trim_whitespace=False,
                                         help_text="The answer to grade, as {{sample.output_text}}.")
    item = serializers.JSONField(required=False, default=dict, help_text="The row, as {{item.*}}.")


class GraderRunApi(APIView):
    @extend_schema(request=GraderRunSerializer, responses={200: dict}, summary="Grade one sample (a dry run)",
                   description="Runs a grader on one sample and row, as a reinforcement job would, before any "
                               "compute is spent. OpenAI's shape: the reward, and each grader's score in metadata.")
    def post(self, request):
        form = GraderRunSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        return Response(services.grader_run(owner=request.user, grader=data["grader"],
                                            model_sample=data["model_sample"],
                                            item=data["item"]))


class GraderValidateSerializer(serializers.Serializer):
    grader = serializers.JSONField(help_text=GRADER_SCHEMA["description"])


class GraderValidateApi(APIView):
    @extend_schema(request=GraderValidateSerializer, responses={200: dict}, summary="Check a grader")
    def post(self, request):
        form = GraderValidateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        services.grader_validate(owner=request.user, grader=form.validated_data["grader"])
        return Response({"grader": form.validated_data["grader"]})


def provider_object(provider: Provider) -> dict:
    """A provider as the API shows it: never its key, only the key's last characters."""
    return {"object": "provider", "id": provider.id, "name": provider.name, "kind": provider.kind,
            "base_url": provider.base_url, "api_key": f"…{provider.api_key_hint}",
            "shared": provider.owner_id is None, "created_at": _ts(provider.created_at)}


class ProviderCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="What a job names in its provider field.")
    base_url = serializers.CharField(max_length=500, help_text="e.g. https://api.openai.com/v1")
    api_key = serializers.CharField(max_length=1000, trim_whitespace=True, help_text="Stored encrypted.")
    kind = serializers.CharField(required=False, default=Provider.Kind.OPENAI)
    shared = serializers.BooleanField(required=False, default=False, help_text="Staff: for every user.")


class ProvidersApi(APIView):
    @extend_schema(request=ProviderCreateSerializer, responses={200: dict}, summary="Add a remote provider",
                   description="An OpenAI-compatible fine-tuning API a job can run on (provider: <name>). The key "
                               "is stored encrypted and never returned.")
    def post(self, request):
        form = ProviderCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(provider_object(services.provider_create(owner=request.user, **form.validated_data)))

    @extend_schema(responses={200: dict}, summary="List your providers and the operator's")
    def get(self, request):
        providers = selectors.providers_visible_to(request.user)
        return Response({"object": "list", "data": [provider_object(p) for p in providers], "has_more": False})


class ProviderApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a provider")
    def get(self, request, provider_id: str):
        return Response(provider_object(selectors.provider_get(request.user, provider_id)))

    @extend_schema(responses={200: dict}, summary="Delete a provider no job ran on")
    def delete(self, request, provider_id: str):
        provider = selectors.provider_get(request.user, provider_id)
        services.provider_delete(provider=provider, by=request.user)
        return Response({"object": "provider.deleted", "id": provider_id, "deleted": True})


def quota_object(project_id: str) -> dict:
    limits = services.quota_for(project_id)
    return {"object": "quota", "organization_id": services.account_of(project_id), **limits.__dict__}


class QuotaSerializer(serializers.Serializer):
    max_concurrent_jobs = serializers.IntegerField(required=False, allow_null=True,
                                                   help_text="Jobs running at once; null: no limit.")
    gpu_hours_per_month = serializers.FloatField(required=False, allow_null=True,
                                                 help_text="Device-hours per calendar month; null: no limit.")
    tokens_per_month = serializers.IntegerField(required=False, allow_null=True,
                                                help_text="Training tokens per calendar month; null: no limit.")
    priority = serializers.IntegerField(required=False, help_text="Higher goes first in the queue.")


class QuotaApi(APIView):
    """Staff only: an account's quota (README "Teams and quotas")."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: dict}, summary="An account's quota (staff)")
    def get(self, request, organization_id: str):
        return Response(quota_object(_account_project(organization_id).pk))

    @extend_schema(request=QuotaSerializer, responses={200: dict}, summary="Set an account's quota (staff)",
                   description="The fields given are set; null clears a limit, zero or less is refused.")
    def post(self, request, organization_id: str):
        project = _account_project(organization_id)
        form = QuotaSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        services.quota_set(project=project, values=form.validated_data)
        return Response(quota_object(project.pk))


def _account_project(organization_id: str):
    project = services.account_project(organization_id)
    if project is None:
        raise NotFound(f"No such organization: {organization_id} (an account is a project, proj_…)",
                       param="organization_id", code="organization_not_found")
    return project
