"""The fine-tuning jobs API, shaped after OpenAI's."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.errors import InvalidRequest
from finetune_site.pagination import cursor_page
from jobs_app import selectors, services
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent

OPENAI_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def job_object(job: FineTuneJob) -> dict:
    hp = job.hyperparameters
    model = getattr(job, "result_model", None) if job.status == FineTuneJob.Status.SUCCEEDED else None
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.base_model.name,
        "created_at": _ts(job.created_at),
        "finished_at": _ts(job.finished_at),
        "fine_tuned_model": model.id if model else None,
        "organization_id": f"user-{job.owner_id}",
        "result_files": [],
        "status": job.status,
        "validation_file": job.validation_dataset_id,
        "training_file": job.dataset_id,
        "hyperparameters": {key: hp.get(key) for key in OPENAI_HYPERPARAMETERS},
        "trained_tokens": job.trained_tokens,
        "error": job.error,
        "user_provided_suffix": job.suffix or None,
        "seed": job.seed,
        "estimated_finish": _ts(job.estimated_finish) if job.status == FineTuneJob.Status.RUNNING else None,
        "integrations": [],
        "metadata": None,
        "method": {"type": job.method, job.method: {"hyperparameters": hp}},
        # extensions
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "started_at": _ts(job.started_at),
        "metrics": job.metrics,
        "estimate": job.estimate,
        "wait_reason": job.wait_reason or None,
        "promotion_gate": job.promotion_gate or None,
        "evaluate_checkpoints": job.evaluate_checkpoints,
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
    }


def checkpoint_object(checkpoint: Checkpoint) -> dict:
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": checkpoint.id,
        "created_at": _ts(checkpoint.created_at),
        "fine_tuned_model_checkpoint": f"{checkpoint.job_id}:ckpt-step-{checkpoint.step}",
        "fine_tuning_job_id": checkpoint.job_id,
        "step_number": checkpoint.step,
        "metrics": {"step": checkpoint.step, **checkpoint.metrics},
        "is_best": checkpoint.is_best,
    }


class JobCreateSerializer(serializers.Serializer):
    model = serializers.CharField()
    training_file = serializers.CharField()
    validation_file = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    hyperparameters = serializers.DictField(required=False, help_text="Deprecated: use method.")
    method = serializers.DictField(required=False)
    suffix = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1)
    integrations = serializers.ListField(required=False, allow_null=True)
    metadata = serializers.DictField(required=False, allow_null=True)
    promotion_gate = serializers.JSONField(
        required=False, allow_null=True,
        help_text='Promote the tuned model only if it beats its base on the validation file, e.g. '
                  '{"metric": "eval_loss", "min_improvement": 0.05, "alias": "production"} or '
                  '{"metric": "accuracy", "threshold": 0.9}.')
    evaluate_checkpoints = serializers.BooleanField(
        required=False, default=False, help_text="Also evaluate every checkpoint and mark the best.")


def _method_from(data: dict) -> tuple[str, dict]:
    """The method type and its hyperparameters (``method.<type>``, or the deprecated top-level key)."""
    method = data.get("method") or {}
    kind = method.get("type", "supervised")
    if kind not in FineTuneJob.Method.values:
        raise InvalidRequest(f"method.type {kind!r} is not supported; use one of {FineTuneJob.Method.values}",
                             param="method.type")
    section = method.get(kind) or {}
    if not isinstance(section, dict) or not isinstance(section.get("hyperparameters", {}), dict):
        raise InvalidRequest(f"method.{kind}.hyperparameters must be an object",
                             param=f"method.{kind}.hyperparameters")
    return kind, {**(data.get("hyperparameters") or {}), **section.get("hyperparameters", {})}


HYPERPARAMETER_DOCS = """Extra keys accepted in method.supervised.hyperparameters (each may be "auto"):
adapter (lora|qlora|full), quantization (nf4|int8, for qlora), devices (processes: one per GPU, or CPU
processes over gloo), n_epochs (1-100), batch_size (1-1024), learning_rate_multiplier (>0),
learning_rate (0-1, overrides the multiplier), max_length (tokens, up to the model's context),
template (how chat rows become tokens: "auto" or "" = the model's own chat template, chatml, llama3, mistral,
alpaca, or completion = the turns joined by new lines; the tuned model's tokenizer carries it),
lora_r, lora_alpha, lora_dropout (0-1), lora_target_modules ("all-linear" or a list of names),
beta (DPO only: method {"type": "dpo", "dpo": {"hyperparameters": {...}}} on prompt/chosen/rejected rows),
logging_steps, save_steps (0 = a checkpoint per epoch), eval_steps (0 = evaluate the validation file
once per epoch)."""


class JobsApi(APIView):
    @extend_schema(request=JobCreateSerializer, responses={200: dict}, summary="Create a fine-tuning job",
                   description=HYPERPARAMETER_DOCS, examples=[OpenApiExample("LoRA on tiny-llama", value={
                       "model": "tiny-llama", "training_file": "file-abc123",
                       "method": {"type": "supervised", "supervised": {"hyperparameters": {
                           "n_epochs": 3, "adapter": "lora", "lora_r": 16, "learning_rate": 0.001}}}})])
    def post(self, request):
        form = JobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        method, hyperparameters = _method_from(data)
        job = services.job_create(
            owner=request.user, training_file=data["training_file"], model=data["model"],
            validation_file=data.get("validation_file") or None, method=method,
            hyperparameters=hyperparameters, suffix=data.get("suffix") or "", seed=data.get("seed"),
            promotion_gate=data.get("promotion_gate"), evaluate_checkpoints=data["evaluate_checkpoints"],
        )
        return Response(job_object(job))

    @extend_schema(responses={200: dict}, summary="List your fine-tuning jobs, newest first")
    def get(self, request):
        return Response(cursor_page(request, selectors.jobs_visible_to(request.user), job_object))


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
    @extend_schema(responses={200: dict}, summary="List a job's events, newest first")
    def get(self, request, job_id: str):
        job = selectors.job_get(request.user, job_id)
        return Response(cursor_page(request, job.events.all(), event_object, order=("seq",)))


class JobCheckpointsApi(APIView):
    @extend_schema(responses={200: dict}, summary="List a job's checkpoints, newest first")
    def get(self, request, job_id: str):
        job = selectors.job_get(request.user, job_id)
        return Response(cursor_page(request, job.checkpoints.all(), checkpoint_object, order=("step",)))


class JobPauseApi(APIView):
    @extend_schema(request=None, responses={200: dict},
                   summary="Pause a job: at once when queued, after a checkpoint when running")
    def post(self, request, job_id: str):
        return Response(job_object(services.job_pause(job=selectors.job_get(request.user, job_id))))


class JobResumeApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Resume a paused job from its last checkpoint")
    def post(self, request, job_id: str):
        return Response(job_object(services.job_resume(job=selectors.job_get(request.user, job_id))))
