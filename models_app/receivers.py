"""How the registry hears from the apps below it (connected in ``ModelsAppConfig.ready``)."""

from pathlib import Path

from jobs_app.services import job_event_add
from models_app.services import evaluation_for_job, fine_tuned_model_create


def model_from_succeeded_job(sender, *, job, output_dir: Path, **kwargs) -> None:
    """A job succeeded: its weights become a version of its model name, evaluated when the job has
    a validation file. Runs inside the job's transition: if it fails, the job is not succeeded."""
    model = fine_tuned_model_create(job=job, adapter_dir=output_dir)
    if evaluation_for_job(model=model):
        job_event_add(job_id=job.id, message=f"Evaluating {model.reference} against {job.base_model.name} "
                                             "on the validation file")
