"""Push job changes to websocket subscribers after the database has them: the job's page
(group ``job-<id>``) and its owner's dashboard (group ``user-<id>-jobs``)."""

import functools
import logging
from collections.abc import Callable

from django.db import transaction

from finetune_site.groups import group_listen, group_send
from jobs_app.models import FineTuneJob

log = logging.getLogger(__name__)


def job_group(job_id: str) -> str:
    return f"job-{job_id}"


def user_jobs_group(user_id: int) -> str:
    return f"user-{user_id}-jobs"


def job_publish(job_id: str, message: dict) -> None:
    """Send ``message`` to the job's group once the current transaction commits."""
    transaction.on_commit(lambda: _send(job_id, message))


def _send(job_id: str, message: dict) -> None:
    try:
        group_send(job_group(job_id), {"type": "job.update", **message})
        owner_id = _owner_of(job_id)
        if owner_id is not None:  # the dashboard re-reads its owner's jobs: only the id travels
            group_send(user_jobs_group(owner_id), {"type": "jobs.update", "job": job_id})
    except Exception:  # the durable JobEvent rows stay the truth; a live page refills from them
        log.warning("could not publish an update of %s", job_id, exc_info=True)


@functools.lru_cache(maxsize=4096)
def _owner_of(job_id: str) -> int | None:
    """A job's owner never changes: asked once per job and process."""
    return FineTuneJob.objects.filter(pk=job_id).values_list("owner_id", flat=True).first()


def job_listen(job_id: str, callback: Callable[[dict], None]) -> Callable[[], None]:
    """Call ``callback`` with every message published about the job until the returned function
    is called (from the channel layer's thread)."""
    return group_listen(job_group(job_id), callback)
