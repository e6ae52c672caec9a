"""What the live job page and its websocket render: one context, the same partials.

The page renders the whole history from JobEvent rows; the consumer renders later rows with
``job_update_html`` so that the first render and the live updates stay identical.
"""

from datetime import datetime

from django.template.loader import render_to_string

from jobs_app import selectors
from jobs_app.models import FineTuneJob, JobEvent
from models_app.models import FineTunedModel


def job_detail_context(job: FineTuneJob) -> dict:
    events = selectors.job_history(job)
    metrics = [e for e in events if e.type == JobEvent.Type.METRICS]
    return {
        "job": job,
        "log_events": [e for e in events if e.type != JobEvent.Type.METRICS],
        "metric_events": metrics,
        "progress": selectors.job_progress(job, metrics[-1].data if metrics else None,
                                           first=(metrics[0].data, metrics[0].created_at) if metrics else None),
        "checkpoints": list(job.checkpoints.all()),
        "result_model": job_result_model(job),
        "last_seq": events[-1].seq if events else 0,
    }


def job_update_html(job: FineTuneJob, events: list[JobEvent], *, last_metric: dict | None,
                    first_metric: tuple[dict, datetime] | None) -> str:
    """Out-of-band fragments for ``events``: appended log and metric lines, refreshed status."""
    metrics = [e for e in events if e.type == JobEvent.Type.METRICS]
    messages = [e for e in events if e.type != JobEvent.Type.METRICS]
    return render_to_string("jobs_app/partials/job_update.html", {
        "job": job,
        "log_events": messages,
        "metric_events": metrics,
        "progress": selectors.job_progress(job, metrics[-1].data if metrics else last_metric, first=first_metric),
        # status, checkpoints and the result only change with a message event
        "refresh_status": bool(messages),
        "checkpoints": list(job.checkpoints.all()) if messages else [],
        "result_model": job_result_model(job) if messages else None,
        "last_seq": events[-1].seq,
    })


def job_result_model(job: FineTuneJob):
    if job.status != FineTuneJob.Status.SUCCEEDED:
        return None
    return FineTunedModel.objects.filter(job=job).first()
