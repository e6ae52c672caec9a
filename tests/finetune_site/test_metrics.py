"""/metrics: jobs by status, waiting jobs per queue, run times and throughput, workers, broker queues
and HTTP latency by route, as Prometheus scrapes them; behind METRICS_TOKEN when one is set."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from finetune_site.celery import app as celery_app
from jobs_app.models import FineTuneJob, Worker
from jobs_app.services import job_transition
from tests.api import api_client
from tests.factories import make_job, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


def scrape(client, **headers) -> dict[str, list]:
    """{metric family name: [(sample name, labels, value), ...]} of one scrape."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {family.name: [(s.name, s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(response.content.decode())}


def value(families: dict, sample: str, **labels) -> float:
    family = families[sample.removesuffix("_total").removesuffix("_bucket").removesuffix("_count")
                      .removesuffix("_sum")]
    found = [v for name, have, v in family if name == sample and all(have.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (sample, labels, family)
    return found[0]


def _finish(job: FineTuneJob, status: str, *, minutes: float, tokens_per_second: float | None = None) -> None:
    end = timezone.now()
    metrics = {"tokens_per_second": tokens_per_second} if tokens_per_second is not None else {}
    FineTuneJob.objects.filter(pk=job.pk).update(status=status, started_at=end - timedelta(minutes=minutes),
                                                 finished_at=end, metrics=metrics)


def test_metrics_count_jobs_by_status_waits_per_queue_run_times_and_workers(client, base_model, no_live_workers):
    Worker.objects.all().delete()  # the rows of workers an earlier test started: only this test's count
    owner = make_user()
    make_job(owner)  # validating_files: waits for the default queue
    queued_long = make_job(owner, status=Status.QUEUED)
    FineTuneJob.objects.filter(pk=queued_long.pk).update(queued_at=timezone.now() - timedelta(minutes=10))
    # Queued 20 minutes ago; the reaper has sent its message again since, moving queued_at to now.
    requeued = make_job(owner)
    job_transition(job_id=requeued.id, to=Status.QUEUED, queued_at=timezone.now())
    requeued.events.filter(data__status=Status.QUEUED).update(created_at=timezone.now() - timedelta(minutes=20))
    running = make_job(owner, status=Status.RUNNING)
    FineTuneJob.objects.filter(pk=running.pk).update(lease_owner="celery@gpu-1")
    _finish(make_job(owner), Status.SUCCEEDED, minutes=3, tokens_per_second=800.0)
    _finish(make_job(owner), Status.SUCCEEDED, minutes=30, tokens_per_second=3000.0)
    _finish(make_job(owner), Status.FAILED, minutes=2)
    Worker.objects.create(name="celery@gpu-1", devices={"kind": "cuda", "count": 2})
    Worker.objects.create(name="celery@cpu-1", devices={"kind": "cpu", "count": 0, "cpus": 8})
    Worker.objects.create(name="celery@dead-1", devices={"kind": "cuda", "count": 4})  # killed, never unregistered
    Worker.objects.filter(name="celery@dead-1").update(last_seen=timezone.now() - timedelta(minutes=10))

    families = scrape(client)

    assert value(families, "finetune_jobs", status="queued") == 2
    assert value(families, "finetune_jobs", status="running") == 1
    assert value(families, "finetune_jobs", status="succeeded") == 2
    assert value(families, "finetune_jobs", status="failed") == 1
    assert value(families, "finetune_jobs", status="validating_files") == 1
    assert value(families, "finetune_jobs", status="cancelled") == 0
    assert value(families, "finetune_jobs_waiting", queue="training", status="queued") == 2
    assert value(families, "finetune_jobs_waiting", queue="default", status="validating_files") == 1
    assert 1199 <= value(families, "finetune_jobs_oldest_wait_seconds", queue="training") < 1260
    assert 0 <= value(families, "finetune_jobs_oldest_wait_seconds", queue="default") < 60

    assert value(families, "finetune_job_run_seconds_count", status="succeeded") == 2
    assert value(families, "finetune_job_run_seconds_bucket", status="succeeded", le="300.0") == 1  # 3 min
    assert value(families, "finetune_job_run_seconds_bucket", status="succeeded", le="3600.0") == 2  # and 30 min
    assert value(families, "finetune_job_run_seconds_sum", status="succeeded") == pytest.approx(33 * 60, abs=1)
    assert value(families, "finetune_job_run_seconds_count", status="failed") == 1
    assert value(families, "finetune_job_tokens_per_second_count") == 2
    assert value(families, "finetune_job_tokens_per_second_bucket", le="1000.0") == 1
    assert value(families, "finetune_job_tokens_per_second_sum") == 3800

    assert value(families, "finetune_workers") == 2 and value(families, "finetune_workers_busy") == 1
    assert value(families, "finetune_workers_stale") == 1
    assert not [v for _, labels, v in families["finetune_worker_devices"] if labels["worker"] == "celery@dead-1"]
    assert value(families, "finetune_worker_busy", worker="celery@gpu-1", kind="cuda") == 1
    assert value(families, "finetune_worker_busy", worker="celery@cpu-1", kind="cpu") == 0
    assert value(families, "finetune_worker_devices", worker="celery@gpu-1") == 2
    assert value(families, "finetune_worker_devices", worker="celery@cpu-1") == 8


def test_metrics_count_the_messages_waiting_in_each_broker_queue(client, settings):
    settings.READY_QUEUES = ["metrics-test-a", "metrics-test-b"]
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge("metrics-test-a")
        try:
            for _ in range(3):
                celery_app.send_task("jobs_app.tasks.jobs_reap", queue="metrics-test-a", connection=connection)
            families = scrape(client)
        finally:
            connection.default_channel.queue_purge("metrics-test-a")
    assert value(families, "finetune_celery_queue_messages", queue="metrics-test-a") == 3
    assert value(families, "finetune_celery_queue_messages", queue="metrics-test-b") == 0
    assert value(families, "finetune_broker_up") == 1


def test_http_latency_is_labelled_by_route_pattern_not_by_path(client, base_model):
    job = make_job()
    api = api_client(job.owner)
    for _ in range(2):
        assert api.get(f"/v1/fine_tuning/jobs/{job.id}").status_code == 200
    assert api.get("/v1/fine_tuning/jobs/ftjob-nope").status_code == 404
    families = scrape(client)
    route = "v1/fine_tuning/jobs/<str:job_id>"
    assert value(families, "finetune_http_request_duration_seconds_count", method="GET", route=route,
                 status="200") >= 2
    assert value(families, "finetune_http_request_duration_seconds_count", method="GET", route=route,
                 status="404") >= 1
    paths = {labels["route"] for _, labels, _ in families["finetune_http_request_duration_seconds"]}
    assert not any(job.id in path for path in paths)


def test_metrics_want_the_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    families = scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token", REMOTE_ADDR="10.1.2.3")
    assert "finetune_jobs" in families


def test_metrics_without_a_token_answer_this_host_only(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 403 and b"METRICS_TOKEN" in response.content
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
