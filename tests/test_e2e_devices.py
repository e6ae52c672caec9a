"""Workers advertise their devices; a job needing more waits with the reason; two processes via torchrun;
a sharded job whose rank is killed resumes from its last complete checkpoint."""

import os
import signal
from pathlib import Path

import pytest

from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Worker
from tests.e2e import client_for, start_job, upload, wait_finished, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fresh_worker(worker_pool, live_base_model):
    worker_pool.stop()  # transactional tests flush tables: restart so it registers again
    worker_pool.ensure()
    return wait_for(lambda: Worker.objects.first(), timeout=30, what="the worker to register")


def test_worker_advertises_its_devices(fresh_worker):
    assert fresh_worker.devices["kind"] == "cpu" and fresh_worker.devices["cpus"] >= 1
    assert fresh_worker.capacity == fresh_worker.devices["cpus"]


def test_job_needing_more_devices_waits_with_the_reason(live_server, fresh_worker):
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, devices=64, n_epochs=1)
    wait_for(lambda: FineTuneJob.objects.get(pk=job.id).wait_reason, timeout=60, what="a wait reason")
    shown = client.fine_tuning.jobs.retrieve(job.id)
    assert shown.status == "queued"
    assert shown.wait_reason == f"waiting for a worker with 64 devices; {fresh_worker.name} has " \
                                f"{fresh_worker.capacity} (CPU)"
    client.fine_tuning.jobs.cancel(job.id)


def test_two_device_job_runs_as_two_torchrun_processes(live_server, fresh_worker):
    if fresh_worker.capacity < 2:
        pytest.fail("this machine has fewer than 2 CPU cores")
    client, _ = client_for(live_server)
    job = wait_finished(client, start_job(client, upload(client).id, devices=2, n_epochs=2, batch_size=4).id)
    assert job.status == "succeeded", job.error
    steps = sorted(e.data["step"] for e in FineTuneJob.objects.get(pk=job.id).events.filter(type="metrics")
                   if "train_loss" in e.data)
    assert steps == [1, 2, 3, 4, 5, 6]  # 24 rows / (4 x 2 ranks) x 2 epochs


def _rank_pids(job_id: str) -> list[int]:
    """The training processes torchrun started for ``job_id`` (their config sits in the job's work folder)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            command = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except (NotADirectoryError, FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if b"workers.distributed" in command and b"torch.distributed.run" not in command \
                and any(job_id.encode() in part for part in command):
            pids.append(int(entry))
    return pids


def test_sharded_job_resumes_from_its_last_checkpoint_after_a_rank_is_killed(live_server, fresh_worker):
    if fresh_worker.capacity < 2:
        pytest.fail("this machine has fewer than 2 CPU cores")
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, devices=2, sharding="fsdp", n_epochs=4, batch_size=4, save_steps=3)
    wait_for(lambda: Checkpoint.objects.filter(job_id=job.id).exists() and len(_rank_pids(job.id)) == 2,
             timeout=180, what="a stored checkpoint")
    os.kill(max(_rank_pids(job.id)), signal.SIGKILL)

    done = wait_finished(client, job.id)
    assert done.status == "succeeded", done.error
    row = FineTuneJob.objects.get(pk=job.id)
    assert row.attempt == 2 and row.hyperparameters["sharding"] == "fsdp"
    resumed = JobEvent.objects.get(job_id=job.id, message__startswith="Resuming from the checkpoint")
    assert resumed.data["resume_step"] % 3 == 0 and resumed.data["resume_step"] >= 3
    steps = sorted(e.data["step"] for e in row.events.filter(type="metrics") if "train_loss" in e.data)
    assert steps == list(range(1, 13))  # 24 rows / (4 x 2 ranks) x 4 epochs, each step once
