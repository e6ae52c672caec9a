"""The Celery app: tasks live in each app's tasks.py."""

import os
import threading

from celery import Celery
from celery.signals import worker_ready
from celery.worker import state as worker_state
from celery.worker.control import inspect_command

# Imported for their signal receivers: request ids ride along in task headers, workers count their tasks.
from finetune_site import request_id, worker_metrics  # noqa: E402, F401

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_site.settings")

app = Celery("finetune_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_device = {"summary": "detecting…"}


@worker_ready.connect
def _device_detect(**kwargs) -> None:
    """Name the worker's device once, off the main thread: status replies must stay instant."""
    from workers.device import device_summary

    threading.Thread(target=lambda: _device.update(summary=device_summary()), daemon=True).start()


@inspect_command()
def worker_status(state, **kwargs) -> dict:
    """The dashboard's one broadcast: this worker's device and the tasks it is running now."""
    return {
        "device": _device["summary"],
        "active": [{"name": request.name, "args": list(request.args or [])}
                   for request in list(worker_state.active_requests)],
    }
