"""Push dataset changes (status, validation progress) to websocket subscribers after commit."""

import logging

from django.db import transaction

from finetune_site.groups import group_send

log = logging.getLogger(__name__)


def dataset_group(dataset_id: str) -> str:
    return f"dataset-{dataset_id}"


def dataset_publish(dataset_id: str, message: dict) -> None:
    """Send ``message`` to the dataset's group once the current transaction commits."""
    transaction.on_commit(lambda: _send(dataset_id, message))


def _send(dataset_id: str, message: dict) -> None:
    try:
        group_send(dataset_group(dataset_id), {"type": "dataset.update", **message})
    except Exception:  # the row stays the truth; a live page refills from it
        log.warning("could not publish an update of %s", dataset_id, exc_info=True)
