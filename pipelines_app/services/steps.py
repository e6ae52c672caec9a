"""What each step type makes and how its end reads: prepare → dataset versions, train → a job (and its model),
evaluate → an evaluation (and the gate), export → an export. Each object is made by its app's service,
so it has its own page and its own checks, as when a user makes it by hand."""

from dataclasses import dataclass, field

from accounts_app.selectors import project_acting
from datasets_app.models import Dataset
from datasets_app.services import dataset_prepare
from finetune_site.errors import InvalidRequest
from jobs_app.api import JobCreateSerializer, job_request_args
from jobs_app.models import FineTuneJob
from jobs_app.services import job_create
from models_app.models import Evaluation, Export, FineTunedModel
from models_app.services import evaluation_create, export_create, model_promote, promotion_gate_decide

# A failure worth trying again: the machine or the network, not the recipe.
TRANSIENT_CODES = {"worker_lost"}
TRANSIENT_ERRORS = ("ConnectionError", "ConnectionResetError", "ConnectionRefusedError", "TimeoutError",
                    "BrokenPipeError", "OperationalError", "WorkerLostError")


@dataclass(frozen=True)
class Outcome:
    status: str  # running, succeeded or failed
    outputs: dict = field(default_factory=dict)
    error: str = ""
    transient: bool = False


RUNNING = Outcome("running")


def error_is_transient(message: str, code: str = "") -> bool:
    """Whether a failure came from the machine (a lost worker, a dropped connection) rather than the input."""
    return code in TRANSIENT_CODES or message.split(":", 1)[0].strip().rsplit(".", 1)[-1] in TRANSIENT_ERRORS


def _failed(error: str, code: str = "") -> Outcome:
    return Outcome("failed", error=error, transient=error_is_transient(error, code))


class PrepareStep:
    @staticmethod
    def start(*, owner, settings: dict) -> dict:
        dataset = Dataset.objects.filter(project=project_acting(owner), pk=settings["dataset"]).first()
        if dataset is None:
            raise InvalidRequest(f"the dataset {settings['dataset']} was deleted")
        versions = dataset_prepare(dataset=dataset, operations=settings["operations"])
        return {"dataset": versions[0].id, **({"validation": versions[1].id} if len(versions) > 1 else {})}

    @staticmethod
    def outcome(outputs: dict, settings: dict) -> Outcome:
        found = {d.id: d for d in Dataset.objects.filter(pk__in=outputs.values())}
        for dataset in found.values():
            if dataset.status == Dataset.Status.INVALID:
                summary = ((dataset.validation_report or {}).get("summary") or "invalid").split("\n")[0]
                return Outcome("failed", error=f"{dataset.id} is invalid: {summary}")
        if len(found) < len(outputs):
            return Outcome("failed", error="a prepared version was deleted")
        return Outcome("succeeded", outputs) if all(d.status == Dataset.Status.READY for d in found.values()) \
            else RUNNING

    @staticmethod
    def outputs_exist(outputs: dict) -> bool:
        return Dataset.objects.filter(pk__in=outputs.values(), status=Dataset.Status.READY).count() == len(outputs)


class TrainStep:
    @staticmethod
    def start(*, owner, settings: dict) -> dict:
        form = JobCreateSerializer(data=settings)
        form.is_valid(raise_exception=True)
        return {"job": job_create(owner=owner, **job_request_args(form.validated_data)).id}

    @staticmethod
    def outcome(outputs: dict, settings: dict) -> Outcome:
        job = FineTuneJob.objects.filter(pk=outputs["job"]).first()
        if job is None:
            return Outcome("failed", error=f"the job {outputs['job']} was deleted")
        if job.status == FineTuneJob.Status.SUCCEEDED:
            model = FineTunedModel.objects.filter(job=job).first()
            if model is None:
                return _failed(f"the job {job.id} succeeded but made no model here (a remote provider's)")
            return Outcome("succeeded", {**outputs, "model": model.id})
        if job.status == FineTuneJob.Status.CANCELLED:
            return Outcome("failed", error=f"the job {job.id} was cancelled")
        if job.status == FineTuneJob.Status.FAILED:
            error = job.error or {}
            return _failed(f"{job.id}: {error.get('message') or 'failed'}", error.get("code", ""))
        return RUNNING

    @staticmethod
    def outputs_exist(outputs: dict) -> bool:
        return FineTunedModel.objects.filter(pk=outputs.get("model")).exists()


class EvaluateStep:
    @staticmethod
    def start(*, owner, settings: dict) -> dict:
        model = FineTunedModel.objects.filter(project=project_acting(owner), pk=settings["model"]).first()
        dataset = Dataset.objects.filter(project=project_acting(owner), pk=settings["dataset"]).first()
        if model is None or dataset is None:
            raise InvalidRequest("the model or the dataset to evaluate was deleted")
        evaluation = evaluation_create(owner=owner, model=model, dataset=dataset, max_rows=settings["max_rows"],
                                       max_new_tokens=settings["max_new_tokens"])
        return {"evaluation": evaluation.id, "model": model.id}

    @staticmethod
    def outcome(outputs: dict, settings: dict) -> Outcome:
        evaluation = Evaluation.objects.select_related("model").filter(pk=outputs["evaluation"]).first()
        if evaluation is None:
            return Outcome("failed", error=f"the evaluation {outputs['evaluation']} was deleted")
        if evaluation.status == Evaluation.Status.FAILED:
            return _failed(f"{evaluation.id}: {evaluation.error}")
        if evaluation.status != Evaluation.Status.SUCCEEDED:
            return RUNNING
        gate = settings.get("gate")
        if not gate:
            return Outcome("succeeded", outputs)
        decision = promotion_gate_decide(gate, evaluation.metrics)
        if not decision["passed"]:
            return Outcome("failed", error=f"promotion gate not passed: {decision['reason']}")
        model_promote(model=evaluation.model, alias=gate["alias"], action="gate")
        return Outcome("succeeded", {**outputs, "gate": decision["reason"]})

    @staticmethod
    def outputs_exist(outputs: dict) -> bool:
        return Evaluation.objects.filter(pk=outputs.get("evaluation"), model_id=outputs.get("model")).exists()


class ExportStep:
    @staticmethod
    def start(*, owner, settings: dict) -> dict:
        model = FineTunedModel.objects.filter(project=project_acting(owner), pk=settings["model"]).first()
        if model is None:
            raise InvalidRequest(f"the model {settings['model']} was deleted")
        export = export_create(model=model, kind=settings["kind"], quantization=settings.get("quantization"))
        return {"export": export.id, "model": model.id}

    @staticmethod
    def outcome(outputs: dict, settings: dict) -> Outcome:
        export = Export.objects.filter(pk=outputs["export"]).first()
        if export is None:
            return Outcome("failed", error=f"the export {outputs['export']} was deleted")
        if export.status == Export.Status.FAILED:
            return _failed(f"{export.id}: {export.error}")
        return Outcome("succeeded", outputs) if export.status == Export.Status.VERIFIED else RUNNING

    @staticmethod
    def outputs_exist(outputs: dict) -> bool:
        return Export.objects.filter(pk=outputs.get("export"), status=Export.Status.VERIFIED).exists()


STEP_KINDS = {"prepare": PrepareStep, "train": TrainStep, "evaluate": EvaluateStep, "export": ExportStep}
