"""A Celery worker's own metrics on WORKER_METRICS_PORT: tasks by how they ended, their run time, tasks
running now, and GPUs read from nvidia-smi."""

import os
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from datasets_app.models import Dataset
from finetune_site.celery import app as celery_app
from finetune_site.request_id import request_id_reset, request_id_set
from finetune_site.worker_metrics import gpu_row, worker_metrics_serve
from jobs_app import tasks
from tests.conftest import _test_database_url
from tests.e2e import ROOT, free_port, wait_for
from tests.factories import make_job


@celery_app.task(name="tests.worker_metrics.boom")
def boom() -> None:
    raise ValueError("boom")


def scrape(url: str) -> dict[tuple, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db
def test_worker_metrics_count_tasks_by_outcome_with_their_run_time():
    port = free_port()
    server = worker_metrics_serve(port=port, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        before = scrape(url)
        celery_app.tasks["jobs_app.tasks.jobs_reap"].apply()
        boom.apply()
        after = scrape(url)
    finally:
        server.shutdown()

    def grew(name: str, **labels) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    reap, failing = "jobs_app.tasks.jobs_reap", "tests.worker_metrics.boom"
    assert grew("finetune_celery_tasks_total", task=reap, state="started") == 1
    assert grew("finetune_celery_tasks_total", task=reap, state="succeeded") == 1
    assert grew("finetune_celery_tasks_total", task=failing, state="failed") == 1
    assert grew("finetune_celery_tasks_total", task=failing, state="succeeded") == 0
    assert grew("finetune_celery_task_duration_seconds_count", task=reap) == 1
    assert sample(after, "finetune_celery_tasks_active", task=reap) == 0


def test_a_port_in_use_leaves_the_worker_without_metrics_rather_than_stopping_it():
    port = free_port()
    first = worker_metrics_serve(port=port, addr="127.0.0.1")
    try:
        assert worker_metrics_serve(port=port, addr="127.0.0.1") is None
    finally:
        first.shutdown()


def test_gpu_rows_are_read_from_nvidia_smi_csv():
    row = gpu_row("0, NVIDIA H100 80GB HBM3, 1024, 81559, 37")
    assert row == {"index": "0", "name": "NVIDIA H100 80GB HBM3", "memory_used_bytes": 1024 * 2**20,
                   "memory_total_bytes": 81559 * 2**20, "utilization": 0.37}
    assert gpu_row("1, Some GPU, 10, 20, [N/A]")["utilization"] is None
    assert gpu_row("garbage") is None


@pytest.mark.e2e
def test_a_prefork_worker_adds_up_its_childrens_tasks_and_keeps_the_request_id(live_base_model, django_db_blocker,
                                                                                tmp_path, no_live_workers):
    """The real thing: `celery worker` with two pool processes; tasks run in the children, the main
    process serves their sum (multiprocess mode). A task queued under a request id writes its events
    under that id in the worker."""
    job = make_job()
    # Its file not yet checked: the validation task only notes that it waits (an event), quickly.
    Dataset.objects.filter(pk=job.dataset_id).update(status=Dataset.Status.UPLOADED)
    port = free_port()
    queue = f"metrics-{port}"
    env = {**os.environ, "WORKER_METRICS_PORT": str(port), "DATABASE_URL": _test_database_url(django_db_blocker)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-Q", queue, "-c", "2", "-P", "prefork",
         "-n", f"metrics-{port}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"],
        cwd=ROOT, env=env, stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _answers(url), timeout=90, what="the worker's metrics port")
        for _ in range(4):
            celery_app.send_task("jobs_app.tasks.jobs_reap", queue=queue)
        token = request_id_set("prefork-abc")
        try:
            tasks.job_validate.apply_async(args=[job.id], queue=queue)
        finally:
            request_id_reset(token)
        wait_for(lambda: job.events.filter(message__startswith="Waiting for").exists(), timeout=60,
                 what="the worker's event")
        done = wait_for(lambda: _counted(scrape(url)), timeout=60, what="5 tasks counted")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert sample(done, "finetune_celery_task_duration_seconds_count", task="jobs_app.tasks.jobs_reap") == 4
    assert sample(done, "finetune_celery_tasks_active", task="jobs_app.tasks.jobs_reap") == 0
    assert sample(done, "finetune_celery_tasks_total", task="jobs_app.tasks.job_validate", state="succeeded") == 1
    assert job.events.get(message__startswith="Waiting for").request_id == "prefork-abc"
    assert job.events.get(seq=1).request_id == ""  # created outside any request


def _counted(samples: dict) -> dict | None:
    """The samples once the 4 reaps and the validation have been counted as succeeded."""
    reaped = sample(samples, "finetune_celery_tasks_total", task="jobs_app.tasks.jobs_reap", state="succeeded")
    validated = sample(samples, "finetune_celery_tasks_total", task="jobs_app.tasks.job_validate", state="succeeded")
    return samples if (reaped, validated) == (4, 1) else None


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False
