"""Jobs survive dead workers, SIGTERM, a flushed broker and crashing data; two workers never share one."""

import signal
import time

import pytest
import redis
from django.conf import settings

from jobs_app.models import Checkpoint, FineTuneJob, JobEvent
from jobs_app.services import jobs_reap
from jobs_app.tasks import job_run as job_run_task
from tests.e2e import client_for, start_job, upload, wait_finished, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
LONG = {"n_epochs": 30, "save_steps": 5}  # 24 rows / batch 8 -> 90 steps, a checkpoint every 5


def _metric_steps(job_id: str) -> list[int]:
    return sorted(e.data["step"] for e in JobEvent.objects.filter(job_id=job_id, type="metrics")
                  if "train_loss" in e.data)


def _reached(job_id: str, step: int) -> bool:
    return JobEvent.objects.filter(job_id=job_id, type="metrics", data__step__gte=step).exists()


def _reap_until(job_id: str, status: str, timeout: float = 60) -> None:
    def reaped():
        jobs_reap()
        return FineTuneJob.objects.get(pk=job_id).status == status
    wait_for(reaped, timeout=timeout, interval=0.5, what=f"the reaper to make {job_id} {status}")


def test_killed_worker_job_resumes_from_checkpoint_and_trains_each_step_once(live_server, live_base_model,
                                                                              worker_pool):
    worker_pool.ensure()
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, **LONG)
    wait_for(lambda: _reached(job.id, 12), timeout=120, what="step 12")
    worker_pool.kill()
    assert FineTuneJob.objects.get(pk=job.id).status == "running"  # nobody told the database yet

    _reap_until(job.id, "queued")
    worker_pool.ensure()
    done = wait_finished(client, job.id, reap=True)
    assert done.status == "succeeded", done.error
    assert _metric_steps(job.id) == list(range(1, 91))
    row = FineTuneJob.objects.get(pk=job.id)
    assert row.attempt == 2
    resumed = JobEvent.objects.get(job_id=job.id, message__startswith="Resuming from the checkpoint")
    assert resumed.data["resume_step"] >= 10
    assert JobEvent.objects.filter(job_id=job.id, message__contains="stopped sending heartbeats").exists()


def test_sigterm_checkpoints_and_requeues_then_another_worker_finishes(live_server, live_base_model, worker_pool):
    worker_pool.ensure()
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, **LONG)
    wait_for(lambda: _reached(job.id, 7), timeout=120, what="step 7")
    worker_pool.process.send_signal(signal.SIGTERM)
    worker_pool.process.wait(timeout=60)

    row = FineTuneJob.objects.get(pk=job.id)
    assert row.status == "queued" and row.stop_request == ""
    stopped_at = max(_metric_steps(job.id))
    assert Checkpoint.objects.filter(job_id=job.id, step=stopped_at).exists()  # saved at the stop, not before
    assert JobEvent.objects.filter(job_id=job.id, message__contains=f"checkpoint at step {stopped_at} saved").exists()

    worker_pool.ensure()
    done = wait_finished(client, job.id, reap=True)
    assert done.status == "succeeded", done.error
    assert _metric_steps(job.id) == list(range(1, 91))


def test_messages_lost_in_a_flushed_broker_are_sent_again_by_the_reaper(live_server, live_base_model, worker_pool):
    worker_pool.ensure()
    client, _ = client_for(live_server)
    file = upload(client)
    running = start_job(client, file.id, n_epochs=10)
    wait_for(lambda: _reached(running.id, 2), timeout=120, what="the first job to run")
    worker_pool.stop()  # SIGTERM: the running job checkpoints and is requeued...
    waiting = start_job(client, file.id, n_epochs=1)  # ...and this one is only validating_files
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # both messages are gone

    worker_pool.ensure()
    time.sleep(1)
    assert {FineTuneJob.objects.get(pk=j.id).status for j in (running, waiting)} <= {"queued", "validating_files"}
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not all(
            FineTuneJob.objects.get(pk=j.id).status == "succeeded" for j in (running, waiting)):
        jobs_reap()
        time.sleep(1)
    assert [client.fine_tuning.jobs.retrieve(j.id).status for j in (running, waiting)] == ["succeeded"] * 2


def test_job_that_crashes_every_time_fails_after_the_retry_limit(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    # LoRA targets that match no module of the model: the trainer raises on every attempt.
    # (Rows that truncation leaves without a trainable token are refused earlier, at validation.)
    job = wait_finished(client, start_job(client, upload(client).id, lora_target_modules=["no_such_proj"],
                                          n_epochs=1).id)
    assert job.status == "failed"
    assert job.error.code == "training_failed" and "failed 3 of 3 attempts" in job.error.message
    assert FineTuneJob.objects.get(pk=job.id).attempt == 3
    assert JobEvent.objects.filter(job_id=job.id, message__contains="retrying").count() == 2


def test_two_workers_racing_for_one_job_train_it_once(live_server, live_base_model, worker_pool):
    from tests.conftest import WorkerPool

    worker_pool.ensure()
    second = WorkerPool(worker_pool.database_url, name="second")
    second.ensure()
    try:
        client, _ = client_for(live_server)
        job = start_job(client, upload(client).id, n_epochs=2)
        wait_for(lambda: FineTuneJob.objects.get(pk=job.id).status in ("queued", "running"), timeout=60,
                 what="the job to be queued")
        for _ in range(4):  # duplicate deliveries, as after a redelivery or a reaper re-send
            job_run_task.delay(job.id)
        done = wait_finished(client, job.id, reap=True)
        assert done.status == "succeeded"
        assert FineTuneJob.objects.get(pk=job.id).attempt == 1
        assert JobEvent.objects.filter(job_id=job.id, message__startswith="Fine-tuning started").count() == 1
        assert _metric_steps(job.id) == list(range(1, 7))
    finally:
        second.stop()


def test_pause_stops_at_a_checkpoint_and_resume_continues(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    job = start_job(client, upload(client).id, n_epochs=30, save_steps=50)
    wait_for(lambda: _reached(job.id, 4), timeout=120, what="step 4")
    assert client.fine_tuning.jobs.pause(job.id).status == "running"
    wait_for(lambda: FineTuneJob.objects.get(pk=job.id).status == "paused", timeout=60, what="the pause")
    paused_at = max(_metric_steps(job.id))
    assert Checkpoint.objects.filter(job_id=job.id, step=paused_at).exists()
    time.sleep(1)
    assert max(_metric_steps(job.id)) == paused_at  # nothing trains while paused

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    done = wait_finished(client, job.id, reap=True)
    assert done.status == "succeeded"
    assert _metric_steps(job.id) == list(range(1, 91))


def test_beat_runs_the_reaper_periodically():
    from finetune_site.celery import app

    entry = app.conf.beat_schedule["jobs-reap"]
    assert entry["task"] == "jobs_app.tasks.jobs_reap" and entry["schedule"] <= 60
    assert "jobs_app.tasks.jobs_reap" in app.tasks
