"""Push job changes to websocket subscribers after the database has them."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def job_group(job_id: str) -> str:
    return f"job-{job_id}"


def job_publish(job_id: str, message: dict) -> None:
    """Send ``message`` to the job's group once the current transaction commits."""
    transaction.on_commit(lambda: _send(job_id, message))


def _send(job_id: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(job_group(job_id), {"type": "job.update", **message})
    except Exception:  # the durable JobEvent rows stay the truth; a live page refills from them
        log.warning("could not publish an update of %s", job_id, exc_info=True)
