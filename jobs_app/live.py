"""What the live job page and its websocket render: one context, the same partials.

The page renders the whole history from JobEvent rows; the consumer renders later rows with
``job_update_html`` so that the first render and the live updates stay identical.
"""

from datetime import datetime

from django.core.exceptions import ObjectDoesNotExist
from django.template.loader import render_to_string

from jobs_app import selectors
from jobs_app.models import FineTuneJob, JobEvent
from jobs_app.services import job_actions, job_tracking

METRIC_LINES = 200


def job_detail_context(job: FineTuneJob) -> dict:
    # Everything up to one sequence number, so the page and the socket's replay meet exactly.
    # event_seq is bumped in the transaction that inserts the event, so rows up to it exist.
    last_seq = FineTuneJob.objects.values_list("event_seq", flat=True).get(pk=job.pk)
    events = job.events.filter(seq__lte=last_seq).order_by("seq")
    metrics = events.filter(type=JobEvent.Type.METRICS)
    first = metrics.values_list("data", "created_at").first()
    recent = list(metrics.order_by("-seq")[:METRIC_LINES])[::-1]
    return {
        "job": job,
        "log_events": list(events.exclude(type=JobEvent.Type.METRICS)),
        # The chart gets every point as compact JSON; the readable list only the newest lines.
        "chart_points": [_point(data) for data in metrics.values_list("data", flat=True)],
        "metric_events": recent,
        "metric_count": metrics.count(),
        "progress": selectors.job_progress(job, recent[-1].data if recent else None, first=first),
        "checkpoints": list(job.checkpoints.all()),
        "tracking": job_tracking(job),
        "last_seq": last_seq,
        **job_status_context(job),
    }


def _point(data: dict) -> list:
    data = data or {}
    return [data.get("step"), data.get("train_loss"), data.get("valid_loss"), data.get("learning_rate")]


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
        "last_seq": events[-1].seq,
        **(job_status_context(job) if messages else {}),
    })


def job_status_context(job: FineTuneJob) -> dict:
    """The status partial's context: the buttons the rules allow now, the model it produced and, once
    it finished, where to go next (the model, its evaluation, the playground, downloads, or a retry)."""
    model = job_result_model(job)
    return {"job": job, "actions": job_actions(job), "result_model": model,
            "result_evaluation": job_result_evaluation(model), "retry": job.status in RETRYABLE}


RETRYABLE = {FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED}


def job_result_evaluation(model):
    """The evaluation that scores the job's model: the automatic one when there is one, else the newest."""
    if model is None:
        return None
    evaluations = list(model.evaluations.order_by("-created_at")[:20])
    return next((e for e in evaluations if e.kind == "auto"), evaluations[0] if evaluations else None)


def job_result_model(job: FineTuneJob):
    """The registry's version made from the job (its ``result_model`` relation), once it succeeded."""
    if job.status != FineTuneJob.Status.SUCCEEDED:
        return None
    try:
        return job.result_model
    except ObjectDoesNotExist:
        return None
