"""How the registry hears from the apps below it (connected in ``ModelsAppConfig.ready``)."""

from pathlib import Path

from jobs_app.services import JudgeModel, job_event_add
from models_app.base_models.services import base_model_local_path
from models_app.selectors import fine_tuned_model_find
from models_app.services import evaluation_for_job, fine_tuned_model_create, model_local_files, vision_gate_apply


def model_from_succeeded_job(sender, *, job, output_dir: Path, **kwargs) -> None:
    """A job succeeded: its weights become a version of its model name, evaluated when the job has
    a validation file. Runs inside the job's transition: if it fails, the job is not succeeded."""
    model = fine_tuned_model_create(job=job, adapter_dir=output_dir)
    if job.vision:  # evaluated on its held-out images as it trained
        vision_gate_apply(model)
    elif evaluation_for_job(model=model):
        job_event_add(job_id=job.id, message=f"Evaluating {model.reference} against {job.base_model.name} "
                                             "on the validation file")


def judge_of(owner, name: str) -> JudgeModel | None:
    """The jobs' judge resolver (``jobs_app.services.judges``): ``owner``'s tuned model ``name`` (id,
    ``name@vN`` or ``name@alias``) with its files fetched on first use, or None."""
    model = fine_tuned_model_find(owner, name)
    if model is None:
        return None
    return JudgeModel(name=name, files=lambda: (base_model_local_path(model.base_model), str(model_local_files(model))))
