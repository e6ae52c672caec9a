"""A Celery worker's own Prometheus metrics, served on ``WORKER_METRICS_PORT`` when it is set: tasks
started, finished and failed with their run time, tasks running now, and the GPUs' memory and
utilisation when ``nvidia-smi`` is there.

Tasks run in the pool's child processes while the port is served by the main one, so the worker
counts in prometheus_client's multiprocess mode: each process writes its numbers to files in
``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary directory unless set) and the main process adds them
up when scraped. The port has no password: publish it only on a network you trust (compose keeps it
on the internal network).
"""

import logging
import os
import shutil
import subprocess
import tempfile
import time

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

# Registered here only: the web process's /metrics does not list the workers' series.
WORKER_REGISTRY = CollectorRegistry()
TASK_BUCKETS = (0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 12 * 3600, 48 * 3600)
TASKS = Counter("finetune_celery_tasks", "Celery tasks this worker ran, by task and how they ended "
                "(started, succeeded, failed, retried).", ["task", "state"], registry=WORKER_REGISTRY)
TASK_SECONDS = Histogram("finetune_celery_task_duration_seconds", "Run time of this worker's tasks.", ["task"],
                         buckets=TASK_BUCKETS, registry=WORKER_REGISTRY)
TASKS_ACTIVE = Gauge("finetune_celery_tasks_active", "Tasks this worker is running now (its busy state).",
                     ["task"], registry=WORKER_REGISTRY, multiprocess_mode="livesum")
_started: dict[str, float] = {}


def _port() -> int:
    from django.conf import settings

    return settings.WORKER_METRICS_PORT


@worker_init.connect
def _multiprocess_prepare(**kwargs) -> None:
    """Before the pool forks: every process of this worker writes its counts where the main one reads them."""
    if not _port():
        return
    from prometheus_client import values

    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="finetune-worker-metrics-"))
    # The value class is chosen when prometheus_client is imported, before this signal: choose again. Series
    # with labels make their values when first used, in the child that uses them.
    values.ValueClass = values.get_value_class()


@worker_ready.connect
def _metrics_serve(**kwargs) -> None:
    port = _port()
    if port:
        worker_metrics_serve(port=port)


def worker_metrics_serve(*, port: int, addr: str = "0.0.0.0"):
    """Serve this worker's metrics (every process's in multiprocess mode, and the GPUs') on ``port``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(GPUS)
    else:
        registry = WORKER_REGISTRY
    try:
        server, _ = start_http_server(port, addr=addr, registry=registry)
    except OSError as error:  # another worker on this host has the port: work on, without metrics
        log.warning("worker metrics: cannot listen on port %s (%s); no metrics from this worker", port, error)
        return None
    log.info("worker metrics on http://%s:%s/metrics", addr, port)
    return server


@task_prerun.connect
def _task_started(task_id: str = "", task=None, **kwargs) -> None:
    name = getattr(task, "name", "?")
    _started[task_id] = time.monotonic()
    TASKS.labels(name, "started").inc()
    TASKS_ACTIVE.labels(name).inc()


@task_postrun.connect
def _task_ended(task_id: str = "", task=None, state: str | None = None, **kwargs) -> None:
    name = getattr(task, "name", "?")
    started = _started.pop(task_id, None)
    if started is not None:
        TASK_SECONDS.labels(name).observe(time.monotonic() - started)
    TASKS_ACTIVE.labels(name).dec()
    if state == "SUCCESS":
        TASKS.labels(name, "succeeded").inc()


@task_failure.connect
def _task_failed(sender=None, **kwargs) -> None:
    TASKS.labels(getattr(sender, "name", "?"), "failed").inc()


@task_retry.connect
def _task_retried(sender=None, **kwargs) -> None:
    TASKS.labels(getattr(sender, "name", "?"), "retried").inc()


@worker_process_shutdown.connect
def _process_gone(**kwargs) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # its "tasks running now" no longer counts


GPU_QUERY = "index,name,memory.used,memory.total,utilization.gpu"


class GpuCollector:
    """Memory and utilisation of each NVIDIA GPU, from ``nvidia-smi`` (never from CUDA: initialising CUDA in
    the worker's main process would break CUDA in the children it forks later). Nothing without one."""

    def __init__(self, query=None) -> None:
        self.query = query or gpu_query  # what lists the GPUs: nvidia-smi unless told otherwise

    def collect(self):
        rows = self.query()
        if not rows:
            return
        used = GaugeMetricFamily("finetune_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
        total = GaugeMetricFamily("finetune_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu", "name"])
        busy = GaugeMetricFamily("finetune_gpu_utilization_ratio", "Share of the last sample period the GPU ran "
                                 "kernels (0 to 1).", labels=["gpu", "name"])
        for row in rows:
            labels = [row["index"], row["name"]]
            used.add_metric(labels, row["memory_used_bytes"])
            total.add_metric(labels, row["memory_total_bytes"])
            if row["utilization"] is not None:
                busy.add_metric(labels, row["utilization"])
        yield from (used, total, busy)


def gpu_query() -> list[dict]:
    """Each GPU ``nvidia-smi`` lists: index, name, memory used and total (bytes), utilisation (0..1 or None)."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return []
    try:
        output = subprocess.run([command, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        log.warning("worker metrics: nvidia-smi failed", exc_info=True)
        return []
    return [row for row in map(gpu_row, output.splitlines()) if row]


def gpu_row(line: str) -> dict | None:
    """One line of ``nvidia-smi --query-gpu=index,name,memory.used,memory.total,utilization.gpu`` (MiB, %)."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != 5:
        return None
    index, name, used, total, utilization = parts
    try:
        return {"index": index, "name": name, "memory_used_bytes": float(used) * 2**20,
                "memory_total_bytes": float(total) * 2**20,
                "utilization": float(utilization) / 100 if utilization.replace(".", "", 1).isdigit() else None}
    except ValueError:
        return None


GPUS = GpuCollector()
WORKER_REGISTRY.register(GPUS)
