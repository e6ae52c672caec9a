"""Through the production web server (uvicorn): a job's events stream as they are written (not held
back until the job ends), request ids come back, and /metrics answers a scrape from this host."""

import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs_app.models import FineTuneJob
from jobs_app.services import job_transition
from tests.api import api_key_for
from tests.factories import make_job, make_metric


def next_event(lines) -> list[str]:
    """The lines of the stream's next block (up to a blank line), comments left out."""
    block = []
    for line in lines:
        if not line:
            if block:
                return block
        elif not line.startswith(":"):
            block.append(line)
    return block


def test_events_stream_live_through_uvicorn_and_end_with_the_job(web_server, live_base_model):
    job = make_job(status=FineTuneJob.Status.RUNNING)
    headers = {"Authorization": "Bearer " + api_key_for(job.owner), "X-Request-ID": "e2e-stream-1"}
    with requests.get(f"{web_server.url}/v1/fine_tuning/jobs/{job.id}/events?stream=true", headers=headers,
                      stream=True, timeout=30) as response:
        assert response.status_code == 200 and response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Request-ID"] == "e2e-stream-1"
        lines = response.iter_lines(decode_unicode=True)
        assert next_event(lines) == ["retry: 2000"]
        # The job is still running: its first event arrives now, not when the job ends.
        first = next_event(lines)
        assert first[0] == "id: 1" and "Created fine-tuning job" in first[1]
        make_metric(job, 1)
        job_transition(job_id=job.id, to=FineTuneJob.Status.SUCCEEDED, finished_at=timezone.now())
        rest = "\n".join(lines)
    assert "id: 2\n" in rest and '"type":"metrics"' in rest and "id: 3\n" in rest
    assert rest.rstrip().endswith('event: end\ndata: {"status":"succeeded"}')


def test_metrics_answer_a_scrape_from_this_host(web_server, live_base_model):
    make_job(status=FineTuneJob.Status.QUEUED)
    assert requests.get(web_server.url + "/healthz", timeout=10).ok
    response = requests.get(web_server.url + "/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["X-Request-ID"]
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    queued = [s.value for s in families["finetune_jobs"].samples if s.labels["status"] == "queued"]
    assert queued == [1]
    routes = {s.labels["route"] for s in families["finetune_http_request_duration_seconds"].samples}
    assert "healthz" in routes
