"""Vision jobs on the real Celery worker survive a dead or stopping worker and pause like language-model
jobs: a worker killed with SIGKILL mid-training leaves its last epoch's checkpoint, a fresh worker resumes
from it and trains no epoch twice; a pause, or a worker's SIGTERM, checkpoints the step it stops at, and
the job continues from that step."""

import signal
import time

import pytest

from jobs_app.models import Checkpoint, FineTuneJob, JobEvent
from jobs_app.services import jobs_reap
from tests.e2e import client_for, wait_finished, wait_for
from tests.test_e2e_vision import _api, _create, _ready_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
# 60 images (9 held out) in batches of 2: 26 steps an epoch, a checkpoint at each epoch's end
LONG = {"strategy": "native", "n_epochs": 12, "early_stopping_patience": 0, "width": 8, "batch_size": 2}


def _epochs(job_id: str) -> list[int]:
    """The epochs of the job's metric events, in the order they were recorded."""
    return [e.data["epoch"] for e in JobEvent.objects.filter(job_id=job_id, type="metrics").order_by("seq")]


def _steps(job_id: str) -> list[int]:
    return [e.data["step"] for e in JobEvent.objects.filter(job_id=job_id, type="metrics").order_by("seq")]


def _engine_resumed_at(job_id: str) -> int:
    """The step the engine said it resumed at (its own log line, not the platform's)."""
    line = JobEvent.objects.get(job_id=job_id, message__startswith="Resuming at step ")
    return int(line.message.split()[3])


def test_a_vision_job_killed_mid_epoch_resumes_from_its_last_epoch_on_a_fresh_worker(live_server, live_base_model,
                                                                                      worker_pool):
    worker_pool.ensure()
    client, _ = client_for(live_server)
    api = _api(client)
    job = _create(live_server, api, _ready_dataset(live_server, api, per_class=20), **LONG)
    wait_for(lambda: Checkpoint.objects.filter(job_id=job["id"]).count() >= 2, timeout=180,
             what="two epochs checkpointed")
    worker_pool.kill()
    assert FineTuneJob.objects.get(pk=job["id"]).status == "running"  # nobody told the database yet

    def reaped():
        jobs_reap()
        return FineTuneJob.objects.get(pk=job["id"]).status == "queued"

    wait_for(reaped, timeout=60, interval=0.5, what="the reaper to requeue the job")
    worker_pool.ensure()  # a fresh worker process
    done = wait_finished(client, job["id"], timeout=300, reap=True)
    assert done.status == "succeeded", done.error

    row = FineTuneJob.objects.get(pk=job["id"])
    assert row.attempt == 2
    assert _epochs(job["id"]) == list(range(1, 13))  # each epoch once: none trained again after the resume
    steps = _steps(job["id"])
    per_epoch = steps[0]
    assert steps == [per_epoch * epoch for epoch in range(1, 13)] and row.metrics["steps"] == 12 * per_epoch
    resumed = JobEvent.objects.get(job_id=job["id"], message__startswith="Resuming from the checkpoint")
    step = resumed.data["resume_step"]
    assert step >= 2 * per_epoch and step % per_epoch == 0  # the end of an epoch the killed worker finished
    assert _engine_resumed_at(job["id"]) == step
    assert JobEvent.objects.filter(job_id=job["id"], message__contains="stopped sending heartbeats").exists()
    assert row.vision["epochs"] == 12 and row.result_model is not None


def test_a_paused_vision_job_checkpoints_its_step_and_resumes_from_it(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    api = _api(client)
    job = _create(live_server, api, _ready_dataset(live_server, api, per_class=20), **LONG)
    wait_for(lambda: _epochs(job["id"]), timeout=180, what="the first epoch")
    assert client.fine_tuning.jobs.pause(job["id"]).status == "running"
    wait_for(lambda: FineTuneJob.objects.get(pk=job["id"]).status == "paused", timeout=60, what="the pause")
    paused = JobEvent.objects.get(job_id=job["id"], message__startswith="Paused after the checkpoint at step ")
    step = int(paused.message.split()[-1])
    assert Checkpoint.objects.filter(job_id=job["id"], step=step).exists()
    done_epochs = _epochs(job["id"])
    time.sleep(1.5)
    assert _epochs(job["id"]) == done_epochs  # nothing trains while paused

    assert client.fine_tuning.jobs.resume(job["id"]).status == "queued"
    done = wait_finished(client, job["id"], timeout=300, reap=True)
    assert done.status == "succeeded", done.error
    assert _engine_resumed_at(job["id"]) == step  # the very step it paused at, mid-epoch or not
    assert _epochs(job["id"]) == list(range(1, 13))
    assert FineTuneJob.objects.get(pk=job["id"]).metrics["steps"] == 12 * _steps(job["id"])[0]


def test_sigterm_checkpoints_a_vision_job_and_another_worker_finishes_it(live_server, live_base_model, worker_pool):
    worker_pool.ensure()
    client, _ = client_for(live_server)
    api = _api(client)
    job = _create(live_server, api, _ready_dataset(live_server, api, per_class=20), **LONG)
    wait_for(lambda: _epochs(job["id"]), timeout=180, what="the first epoch")
    worker_pool.process.send_signal(signal.SIGTERM)
    worker_pool.process.wait(timeout=60)

    row = FineTuneJob.objects.get(pk=job["id"])
    assert row.status == "queued" and row.stop_request == ""
    requeued = JobEvent.objects.get(job_id=job["id"], message__contains="is shutting down; checkpoint at step ")
    step = int(requeued.message.split("checkpoint at step ")[1].split()[0])
    assert Checkpoint.objects.filter(job_id=job["id"], step=step).exists()

    worker_pool.ensure()
    done = wait_finished(client, job["id"], timeout=300, reap=True)
    assert done.status == "succeeded", done.error
    assert _engine_resumed_at(job["id"]) == step
    assert _epochs(job["id"]) == list(range(1, 13))
