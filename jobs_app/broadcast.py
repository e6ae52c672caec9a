"""Push job changes to websocket subscribers after the database has them: the job's page
(group ``job-<id>``) and the dashboards of its project's members (group ``project-<id>-jobs``)."""

import functools
import logging
from collections.abc import Callable

from django.db import transaction

from finetune_site.groups import group_listen, group_send
from jobs_app.models import FineTuneJob

log = logging.getLogger(__name__)


def job_group(job_id: str) -> str:
    return f"job-{job_id}"


def project_jobs_group(project_id: str) -> str:
    return f"project-{project_id}-jobs"


def job_publish(job_id: str, message: dict) -> None:
    """Send ``message`` to the job's group once the current transaction commits."""
    transaction.on_commit(lambda: _send(job_id, message))


def _send(job_id: str, message: dict) -> None:
    try:
        group_send(job_group(job_id), {"type": "job.update", **message})
        project_id = _project_of(job_id)
        if project_id is not None:  # a dashboard re-reads its project's jobs: only the id travels
            group_send(project_jobs_group(project_id), {"type": "jobs.update", "job": job_id})
    except Exception:  # the durable JobEvent rows stay the truth; a live page refills from them
        log.warning("could not publish an update of %s", job_id, exc_info=True)


@functools.lru_cache(maxsize=4096)
def _project_of(job_id: str) -> str | None:
    """A job's project never changes: asked once per job and process."""
    return FineTuneJob.objects.filter(pk=job_id).values_list("project_id", flat=True).first()


def job_listen(job_id: str, callback: Callable[[dict], None]) -> Callable[[], None]:
    """Call ``callback`` with every message published about the job until the returned function
    is called (from the channel layer's thread)."""
    return group_listen(job_group(job_id), callback)
