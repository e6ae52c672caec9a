"""Derived reads the pages share: progress (ETA, tokens/s)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs_app.models import FineTuneJob
from jobs_app.selectors import job_progress

NOW = timezone.now()


def _job(status="running", started=100, finished=None) -> FineTuneJob:
    return FineTuneJob(status=status, started_at=NOW - timedelta(seconds=started),
                       finished_at=finished and NOW - timedelta(seconds=finished))


def test_rate_counts_from_the_first_step_and_the_eta_counts_down_from_the_workers():
    first = ({"step": 1, "tokens": 100}, NOW - timedelta(seconds=40))
    metric = {"step": 5, "total_steps": 25, "tokens": 500, "eta_seconds": 120.0,
              "time": (NOW - timedelta(seconds=10)).timestamp()}
    progress = job_progress(_job(), metric, first=first, now=NOW)
    assert progress.percent == 20
    assert progress.eta_seconds == pytest.approx(110)  # the whole job's time left when the step ended, 10 s ago
    assert progress.tokens_per_second == pytest.approx(400 / 40)


def test_without_a_first_step_time_the_rate_counts_from_the_start_and_no_eta_is_guessed():
    progress = job_progress(_job(started=50), {"step": 5, "total_steps": 10, "tokens": 1000}, now=NOW)
    assert progress.eta_seconds is None and progress.tokens_per_second == pytest.approx(20)


def test_finished_jobs_have_no_eta_and_succeeded_is_full():
    done = job_progress(_job("succeeded", finished=10), {"step": 9, "total_steps": 10}, now=NOW)
    assert done.step == 10 and done.percent == 100 and done.eta_seconds is None
    assert job_progress(_job("cancelled", finished=1), {"step": 3, "total_steps": 10}).eta_seconds is None


def test_no_metrics_yet_is_zero_progress():
    progress = job_progress(_job("queued"), None, now=NOW)
    assert progress.step == 0 and progress.percent == 0 and progress.eta_seconds is None
