"""Workers advertise their devices; a job needing more waits with the reason; two processes via torchrun."""

import pytest

from jobs_app.models import FineTuneJob, Worker
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
