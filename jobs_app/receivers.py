"""How jobs hear from the apps below them (connected in ``JobsAppConfig.ready``)."""

from django.db.models import Q

from jobs_app import tasks
from jobs_app.models import FineTuneJob


def jobs_recheck(sender, *, dataset_id: str, **kwargs) -> None:
    """A dataset has its verdict: jobs waiting for its check go on (or fail) now."""
    waiting = FineTuneJob.objects.filter(status=FineTuneJob.Status.VALIDATING_FILES).filter(
        Q(dataset_id=dataset_id) | Q(validation_dataset_id=dataset_id))
    for job_id in waiting.values_list("id", flat=True):
        tasks.job_validate.delay(job_id)
