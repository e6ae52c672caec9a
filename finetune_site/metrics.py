"""Prometheus metrics of the web process: request latency by route, and the ``/metrics`` page.

The jobs' gauges (``jobs_app.metrics``) are read from the database when Prometheus scrapes; the
Celery workers serve their own (``finetune_site.worker_metrics``). ``METRICS_TOKEN``, when set, must
come as ``Authorization: Bearer <token>``; unset, ``/metrics`` answers requests from this host only.
"""

import hmac
import logging
import os
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

access_log = logging.getLogger("finetune_site.access")

# Upper bounds in seconds: pages and API calls take milliseconds; uploads and chat replies seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
REQUEST_SECONDS = Histogram(
    "finetune_http_request_duration_seconds",
    "Time from a request's arrival to its response's headers, by method, route pattern and status.",
    ["method", "route", "status"], buckets=LATENCY_BUCKETS,
)
LOCAL_ADDRESSES = {"127.0.0.1", "::1"}


def request_route(request: HttpRequest) -> str:
    """The URL pattern that served the request (``v1/fine_tuning/jobs/<str:job_id>``), never the raw path:
    a label per job id would grow without end."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.route:
        return match.route
    if request.path.startswith(settings.STATIC_URL):
        return "static"
    return "unmatched"


class RequestMetricsMiddleware:
    """Times every request into ``finetune_http_request_duration_seconds`` and writes one access log line
    (method, route, path, status, duration; the request id comes from the logging filter)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        route = request_route(request)
        REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(seconds)
        access_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code, seconds * 1000,
                        extra={"method": request.method, "route": route, "path": request.path,
                               "status": response.status_code, "duration_ms": round(seconds * 1000, 1)})
        return response


def metrics_allowed(request: HttpRequest) -> bool:
    """With ``METRICS_TOKEN``: the bearer token must match; without: only a client on this host."""
    token = settings.METRICS_TOKEN
    if not token:
        return request.META.get("REMOTE_ADDR", "") in LOCAL_ADDRESSES
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_response(*registries: CollectorRegistry) -> HttpResponse:
    """This process's metrics (every process's when ``PROMETHEUS_MULTIPROC_DIR`` is set), then ``registries``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        own = CollectorRegistry()
        multiprocess.MultiProcessCollector(own)
    else:
        own = REGISTRY
    body = b"".join(generate_latest(registry) for registry in (own, *registries))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class BrokerQueuesCollector:
    """Celery messages waiting in the broker per queue (``READY_QUEUES``), asked at scrape time."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from finetune_site.celery import app

        depth = GaugeMetricFamily("finetune_celery_queue_messages", "Celery messages waiting in the broker for a "
                                  "worker, per queue.", labels=["queue"])
        up = GaugeMetricFamily("finetune_broker_up", "1 when the broker answered this scrape.")
        try:
            with app.connection_for_read() as connection:
                connection.ensure_connection(max_retries=1)
                channel = connection.default_channel
                for queue in settings.READY_QUEUES:
                    depth.add_metric([queue], _queue_size(channel, queue))
            up.add_metric([], 1)
        except Exception:
            logging.getLogger(__name__).warning("metrics: the broker did not answer", exc_info=True)
            up.add_metric([], 0)
        yield depth
        yield up


def _queue_size(channel, queue: str) -> int:
    from kombu.exceptions import ChannelError

    try:
        return channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # never declared, or emptied and so gone (Redis keeps no empty lists)
        return 0
