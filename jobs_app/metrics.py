"""The jobs' Prometheus metrics, read from the database when Prometheus scrapes ``/metrics``.

A few aggregate queries per scrape: the numbers are the database's, the same from whichever web
process answers, and nothing is lost when a process restarts.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs_app.models import FINISHED, FineTuneJob, Worker
from jobs_app.selectors import worker_alive_seconds, workers_alive

Status = FineTuneJob.Status
# Upper bounds in seconds of a job's run, from its first claim to its end.
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 72 * 3600)
# Upper bounds of a finished job's training throughput, in tokens per second.
THROUGHPUT_BUCKETS = (100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)


def job_queues() -> dict[str, str]:
    """The Celery queue a job waits on in each waiting status: files are checked on the validation task's
    queue, a queued job waits for the run task's."""
    routes, default = settings.CELERY_TASK_ROUTES, settings.CELERY_TASK_DEFAULT_QUEUE
    return {
        Status.VALIDATING_FILES: routes.get("jobs_app.tasks.job_validate", {}).get("queue", default),
        Status.QUEUED: routes.get("jobs_app.tasks.job_run", {}).get("queue", default),
    }


class JobsCollector(Collector):
    """Jobs by status, waiting jobs and the oldest one's wait per queue, run time and throughput of
    finished jobs, and the workers that train."""

    def collect(self):
        now = timezone.now()
        yield self._by_status()
        yield from self._waiting(now)
        yield from self._finished()
        yield from self._workers()

    def _by_status(self) -> GaugeMetricFamily:
        counts = dict(FineTuneJob.objects.order_by().values_list("status").annotate(n=Count("pk")))
        family = GaugeMetricFamily("finetune_jobs", "Fine-tuning jobs in each status.", labels=["status"])
        for status in Status.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _waiting(self, now):
        waiting = GaugeMetricFamily("finetune_jobs_waiting", "Jobs waiting for a worker of a Celery queue "
                                    "(validating_files: the default queue; queued: the training queue).",
                                    labels=["queue", "status"])
        oldest = GaugeMetricFamily("finetune_jobs_oldest_wait_seconds", "How long the longest-waiting job of a "
                                   "queue has waited (0 when none waits).", labels=["queue", "status"])
        # Since when a queued job waits: its last move to queued (an event), not queued_at, which the reaper
        # moves on each time it sends the job's message again.
        queued_since = Coalesce(Max("events__created_at", filter=Q(events__data__status=Status.QUEUED)), "queued_at")
        for status, queue in job_queues().items():
            since = queued_since if status == Status.QUEUED else F("created_at")
            jobs = FineTuneJob.objects.filter(status=status)
            row = {"n": jobs.count(),
                   "first": jobs.annotate(since=since).aggregate(first=Min("since"))["first"]}
            waiting.add_metric([queue, status], row["n"])
            oldest.add_metric([queue, status], max((now - row["first"]).total_seconds(), 0) if row["first"] else 0)
        yield waiting
        yield oldest

    def _finished(self):
        run = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        finished = FineTuneJob.objects.filter(status__in=FINISHED, started_at__isnull=False,
                                              finished_at__isnull=False).annotate(run=run)
        family = HistogramMetricFamily("finetune_job_run_seconds", "Run time of finished jobs, from the first "
                                       "claim to the end, by final status.", labels=["status"])
        for status in sorted(FINISHED):
            aggregates = {f"le_{bound}": Count("pk", filter=Q(run__lte=timedelta(seconds=bound)))
                          for bound in DURATION_BUCKETS}
            row = finished.filter(status=status).aggregate(n=Count("pk"), total=Sum("run"), **aggregates)
            buckets = [(floatToGoString(bound), row[f"le_{bound}"]) for bound in DURATION_BUCKETS]
            buckets.append(("+Inf", row["n"]))
            family.add_metric([status], buckets, (row["total"] or timedelta()).total_seconds())
        yield family

        speeds = [value for value in FineTuneJob.objects.filter(status=Status.SUCCEEDED)
                  .values_list("metrics__tokens_per_second", flat=True) if isinstance(value, int | float)]
        throughput = HistogramMetricFamily("finetune_job_tokens_per_second", "Training throughput of succeeded "
                                           "jobs (tokens per second over the whole run).", labels=[])
        buckets = [(floatToGoString(bound), sum(1 for speed in speeds if speed <= bound))
                   for bound in THROUGHPUT_BUCKETS]
        throughput.add_metric([], buckets + [("+Inf", len(speeds))], float(sum(speeds)))
        yield throughput

    def _workers(self):
        busy = set(FineTuneJob.objects.filter(status=Status.RUNNING).exclude(lease_owner="")
                   .values_list("lease_owner", flat=True))
        workers = list(workers_alive())  # the others are gone: they only show in finetune_workers_stale
        registered = GaugeMetricFamily("finetune_workers", "Celery workers registered (started and not stopped) "
                                       "and alive (seen lately).")
        registered.add_metric([], len(workers))
        stale = GaugeMetricFamily("finetune_workers_stale", "Workers registered but not seen for over "
                                  f"{worker_alive_seconds()}s: killed without stopping, or their host is lost.")
        stale.add_metric([], Worker.objects.count() - len(workers))
        busy_total = GaugeMetricFamily("finetune_workers_busy", "Registered workers running a job now.")
        busy_total.add_metric([], sum(1 for worker in workers if worker.name in busy))
        each = GaugeMetricFamily("finetune_worker_busy", "1 while the worker runs a job.", labels=["worker", "kind"])
        devices = GaugeMetricFamily("finetune_worker_devices", "Devices a worker advertised (GPUs, else CPU "
                                    "cores).", labels=["worker", "kind"])
        for worker in workers:
            kind = str(worker.devices.get("kind", "cpu"))
            each.add_metric([worker.name, kind], 1 if worker.name in busy else 0)
            devices.add_metric([worker.name, kind], worker.capacity)
        yield from (registered, stale, busy_total, each, devices)
