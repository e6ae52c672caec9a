"""The sweeps API: POST /v1/sweeps, list, retrieve, cancel, promote the best trial."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from finetune_site.pagination import cursor_page
from sweeps_app import selectors, services
from sweeps_app.models import Sweep


def _ts(value) -> int | None:
    return int(value.timestamp()) if value else None


def trial_object(trial) -> dict:
    job = trial.job
    model = getattr(job, "result_model", None) if job else None
    return {"number": trial.number, "params": trial.params, "state": trial.state, "value": trial.value,
            "job_id": trial.job_id, "job_status": job.status if job else None,
            "fine_tuned_model": model.id if model else None, "note": trial.note or None}


def sweep_object(sweep: Sweep) -> dict:
    trials = selectors.sweep_trials(sweep)
    best = services.sweep_best_trial(sweep)
    request = sweep.job_request
    return {
        "object": "sweep", "id": sweep.id, "status": sweep.status, "reason": sweep.reason or None,
        "created_at": _ts(sweep.created_at),
        "finished_at": _ts(sweep.finished_at), "model": request["model"], "training_file": request["training_file"],
        "validation_file": request["validation_file"],
        "method": {"type": request["objective"], request["objective"]: {"hyperparameters": request["hyperparameters"]}},
        "suffix": request["suffix"] or None, "search_space": sweep.search_space,
        "objective": {"metric": sweep.metric, "direction": sweep.direction}, "max_trials": sweep.max_trials,
        "parallelism": sweep.parallelism, "pruning": sweep.pruning or {"type": "none"},
        "initial_points": sweep.initial_points, "best_trial": trial_object(best) if best else None,
        "trials": [trial_object(t) for t in trials],
    }


class SweepCreateSerializer(serializers.Serializer):
    model = serializers.CharField()
    training_file = serializers.CharField()
    validation_file = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    method = serializers.JSONField(required=False, allow_null=True, help_text="The job body's method: the fixed "
                                   "hyperparameters every trial starts from.")
    suffix = serializers.CharField(required=False, allow_blank=True, max_length=64)
    search_space = serializers.JSONField(help_text='{"<hyperparameter>": {"type": "loguniform" | "uniform" | "int", '
                                         '"low": .., "high": ..} or {"type": "categorical", "values": [..]}}')
    objective = serializers.JSONField(help_text='{"metric": "valid_loss", "direction": "minimize"}: a job metric '
                                      "(valid_loss, full_valid_loss, valid_mean_token_accuracy, train_loss) or one of "
                                      "the evaluation after each trial (eval_loss, perplexity, accuracy, exact_match, "
                                      "bleu, rouge1, rouge2, rougeL); direction: the metric's better way")
    max_trials = serializers.JSONField()
    parallelism = serializers.JSONField(required=False, default=1)
    pruning = serializers.JSONField(required=False, allow_null=True, default=None, help_text=(
        '{"type": "median", "startup_trials": 2, "warmup_passes": 0} (the default with a validation file): a '
        "trial whose validation loss trails the median of the complete trials at the same pass is stopped; "
        '{"type": "none"}: every trial trains to the end'))
    initial_points = serializers.JSONField(required=False, allow_null=True, default=None, help_text=(
        'Points tried first, in order, e.g. [{"learning_rate_multiplier": 1}]; names left out are sampled'))


class SweepsApi(APIView):
    @extend_schema(request=SweepCreateSerializer, responses={200: dict}, summary="Start a hyperparameter sweep",
                   examples=[OpenApiExample("Learning rate and epochs", value={
                       "model": "tiny-llama", "training_file": "file-abc", "validation_file": "file-def",
                       "search_space": {"learning_rate_multiplier": {"type": "loguniform", "low": 0.1, "high": 10},
                                        "n_epochs": {"type": "int", "low": 1, "high": 3}},
                       "objective": {"metric": "valid_loss", "direction": "minimize"},
                       "max_trials": 8, "parallelism": 2})])
    def post(self, request):
        form = SweepCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        sweep = services.sweep_create(
            owner=request.user, model=data["model"], training_file=data["training_file"],
            validation_file=data.get("validation_file") or None, method=data.get("method"),
            suffix=data.get("suffix") or "", search_space=data["search_space"], objective=data["objective"],
            max_trials=data["max_trials"], parallelism=data["parallelism"], pruning=data["pruning"],
            initial_points=data["initial_points"])
        return Response(sweep_object(sweep))

    @extend_schema(responses={200: dict}, summary="List your sweeps, newest first")
    def get(self, request):
        return Response(cursor_page(request, selectors.sweeps_visible_to(request.user), sweep_object))


class SweepApi(APIView):
    @extend_schema(responses={200: dict}, summary="Retrieve a sweep with its trials")
    def get(self, request, sweep_id: str):
        return Response(sweep_object(selectors.sweep_get(request.user, sweep_id)))


class SweepPromoteBestApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Give the best trial's model version an alias")
    def post(self, request, sweep_id: str):
        sweep = selectors.sweep_get(request.user, sweep_id)
        alias = services.sweep_promote_best(sweep=sweep, alias=request.data.get("alias") or "production")
        return Response({"object": "model.alias", "name": alias.name, "alias": alias.alias, "model": alias.model_id})


class SweepCancelApi(APIView):
    @extend_schema(request=None, responses={200: dict}, summary="Cancel a sweep: no new trials, unfinished ones "
                   "cancelled")
    def post(self, request, sweep_id: str):
        sweep = services.sweep_cancel(sweep=selectors.sweep_get(request.user, sweep_id))
        return Response(sweep_object(sweep))
