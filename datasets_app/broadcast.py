"""Push dataset changes (status, validation progress) to websocket subscribers after commit."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def dataset_group(dataset_id: str) -> str:
    return f"dataset-{dataset_id}"


def dataset_publish(dataset_id: str, message: dict) -> None:
    """Send ``message`` to the dataset's group once the current transaction commits."""
    transaction.on_commit(lambda: _send(dataset_id, message))


def _send(dataset_id: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(dataset_group(dataset_id), {"type": "dataset.update", **message})
    except Exception:  # the row stays the truth; a live page refills from it
        log.warning("could not publish an update of %s", dataset_id, exc_info=True)
