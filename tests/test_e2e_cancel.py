"""Cancelling through the API: queued jobs at once, running jobs within one training step."""

import pytest

from jobs_app.models import FineTuneJob, JobEvent
from tests.e2e import client_for, start_job, upload, wait_finished, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_running_job_stops_within_one_step_and_frees_the_worker(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    file = upload(client)
    job = start_job(client, file.id, n_epochs=100)
    wait_for(lambda: JobEvent.objects.filter(job_id=job.id, type="metrics", data__step__gte=3).exists(),
             timeout=120, what="training to reach step 3")

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    cancelled_at = FineTuneJob.objects.get(pk=job.id).finished_at.timestamp()

    next_job = wait_finished(client, start_job(client, file.id, n_epochs=1).id)
    assert next_job.status == "succeeded"
    # Events are stored in batches, so compare when each step ended (data.time) with the cancel:
    # the step in progress finishes and is logged; at most one more if the cancel landed between
    # the step's check and its log line.
    ended_after = [e.data["step"] for e in JobEvent.objects.filter(job_id=job.id, type="metrics")
                   if e.data["time"] > cancelled_at]
    assert len(ended_after) <= 2 and max(_steps(job.id)) < 300
    final = FineTuneJob.objects.get(pk=job.id)
    assert final.status == "cancelled" and not hasattr(final, "result_model")
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model is None


def test_cancel_of_finished_job_is_refused(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    job = wait_finished(client, start_job(client, upload(client).id, n_epochs=1).id)
    with pytest.raises(Exception) as error:
        client.fine_tuning.jobs.cancel(job.id)
    assert error.value.status_code == 409 and "already succeeded" in str(error.value)


def _steps(job_id: str) -> list[int]:
    rows = JobEvent.objects.filter(job_id=job_id, type="metrics")
    return [event.data["step"] for event in rows]
