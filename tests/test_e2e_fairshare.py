"""Real worker processes take queued jobs by fair share, hold a job over its account's quota with the
reason, and fail a job that runs past its timeout."""

import pytest

from accounts_app.selectors import project_personal
from jobs_app.models import FineTuneJob, Quota
from jobs_app.services import job_send
from tests.e2e import client_for, start_job, upload, wait_finished, wait_for
from tests.factories import make_dataset, make_job, make_user
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
QUICK = {"n_epochs": 1, "batch_size": 8}  # 8 rows: one step
LONG = {"n_epochs": 100, "batch_size": 1}  # 2,400 steps: runs until cancelled


def _queued(owner, dataset, **hyperparameters) -> str:
    """A job past its file checks, its message sent: what a worker takes."""
    job = make_job(owner, dataset=dataset, status="queued", hyperparameters=hyperparameters)
    job_send(job)
    return job.id


def test_second_account_starts_before_the_first_accounts_backlog_drains(live_server, live_base_model, worker_pool):
    worker_pool.stop()  # no worker yet: six jobs wait queued, in the order they arrived
    first, second = make_user(), make_user()
    backlog = [_queued(first, make_dataset(first, rows=classification_rows(8)), **QUICK) for _ in range(4)]
    later = [_queued(second, make_dataset(second, rows=classification_rows(8)), **QUICK) for _ in range(2)]

    worker_pool.ensure()  # one worker (one job at a time) now takes the six messages
    for owner, jobs in ((first, backlog), (second, later)):
        client, _ = client_for(live_server, owner)
        assert [wait_finished(client, job_id).status for job_id in jobs] == ["succeeded"] * len(jobs)
    started = list(FineTuneJob.objects.filter(pk__in=backlog + later).order_by("started_at")
                   .values_list("id", flat=True))
    assert started[0] == backlog[0]  # nobody has used anything: the oldest job
    assert started[1] == later[0]  # then the account with no usage, ahead of three older jobs
    assert set(started[:4]) >= set(later)  # both of its jobs start before the first account's backlog drains
    assert started[-2:] == backlog[-2:]


def test_job_over_max_concurrent_waits_with_the_reason_while_a_worker_is_free(
        live_server, live_base_model, worker_pool, second_worker_pool):
    worker_pool.ensure()
    second_worker_pool.ensure()  # two workers: the wait is the quota's, not a lack of workers
    client, user = client_for(live_server)
    Quota.objects.create(project=project_personal(user), max_concurrent_jobs=1)
    dataset = make_dataset(user, rows=classification_rows(8))
    running = _queued(user, dataset, **LONG)
    wait_for(lambda: FineTuneJob.objects.filter(pk=running, status="running").exists(), timeout=120,
             what="the first job to run")
    held = _queued(user, dataset, **QUICK)
    wait_for(lambda: FineTuneJob.objects.get(pk=held).wait_reason, timeout=120, what="a wait reason")
    shown = client.fine_tuning.jobs.retrieve(held)
    assert shown.status == "queued"
    assert shown.wait_reason == "waiting for a slot: 1 of the account's 1 concurrent jobs are running (quota)"

    client.fine_tuning.jobs.cancel(running)  # the slot frees: a worker takes the held job at once
    done = wait_finished(client, held, timeout=120)
    assert done.status == "succeeded" and done.wait_reason is None


def test_job_past_its_timeout_fails_with_code_timeout(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    job = start_job(client, upload(client, classification_rows(8)).id, **LONG, timeout=3)
    done = wait_finished(client, job.id, timeout=120)
    assert done.status == "failed" and done.error.code == "timeout"
    assert "timeout of 3 seconds" in done.error.message
    final = FineTuneJob.objects.get(pk=job.id)
    # failed soon after its deadline: the step in progress ends, no later checkpoint or model is made
    assert (final.finished_at - final.started_at).total_seconds() < 15
    assert not hasattr(final, "result_model")
