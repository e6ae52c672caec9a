"""Quotas, and the order in which workers take queued jobs.

A free worker takes the first queued job in ``queue_order``: higher priority first, then fair share
(the account that used the fewest device-seconds in the last ``FAIR_SHARE_HOURS`` first), then age
(the oldest first). A job whose account is at one of its limits (``quota_problem``) waits with the
reason in its ``wait_reason``; a job that could never fit its account's monthly budget is refused
when it is created (``job_quota_check``).

An account is a job's project (the API's ``organization_id``, ``proj_…``): its members share one quota
and one share of the queue. Only ``account_of`` and ``quota_for`` know that.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from accounts_app.models import Project
from accounts_app.selectors import project_acting
from finetune_site.errors import InvalidRequest
from jobs_app.models import FineTuneJob, Quota

Status = FineTuneJob.Status
CLAIM_LOCK = 0x66747131  # PostgreSQL advisory lock id: one claim at a time decides over every account


@dataclass(frozen=True)
class Limits:
    """An account's quota; None: no limit."""

    max_concurrent_jobs: int | None = None
    gpu_hours_per_month: float | None = None
    tokens_per_month: int | None = None
    priority: int = 0


@dataclass(frozen=True)
class Usage:
    """What an account uses: jobs running now, this calendar month's device-hours and training tokens, and
    its device-seconds in the fair-share window."""

    running: int = 0
    gpu_hours: float = 0.0
    tokens: int = 0
    recent_seconds: float = 0.0


@dataclass(frozen=True)
class Need:
    """What one job will use, from its estimate (0 where the estimate does not say yet)."""

    gpu_hours: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class Queued:
    """A queued job as the order sees it."""

    job_id: str
    account: str
    priority: int
    recent_seconds: float
    created_at: datetime


def queue_order(queued: Iterable[Queued]) -> list[Queued]:
    """Priority (higher first), then fair share (less recent usage first), then age (older first); the id
    settles exact ties so two workers agree."""
    return sorted(queued, key=lambda q: (-q.priority, q.recent_seconds, q.created_at, q.job_id))


def quota_problem(limits: Limits, usage: Usage, need: Need) -> str:
    """Why a job of an account with ``usage`` cannot start now under ``limits`` ("" when it can)."""
    never = quota_never_fits(limits, need)
    if never:
        return never
    if limits.max_concurrent_jobs is not None and usage.running >= limits.max_concurrent_jobs:
        return (f"waiting for a slot: {usage.running} of the account's {limits.max_concurrent_jobs} concurrent "
                "jobs are running (quota)")
    if limits.tokens_per_month is not None and usage.tokens + need.tokens > limits.tokens_per_month:
        return (f"waiting for next month's token budget: {usage.tokens:,} of {limits.tokens_per_month:,} used this "
                f"month and this job needs about {need.tokens:,} (quota)")
    if limits.gpu_hours_per_month is not None and usage.gpu_hours + need.gpu_hours > limits.gpu_hours_per_month:
        return (f"waiting for next month's GPU-hour budget: {usage.gpu_hours:,.2f} of {limits.gpu_hours_per_month:g} "
                f"used this month and this job needs about {need.gpu_hours:,.2f} (quota)")
    return ""


def quota_never_fits(limits: Limits, need: Need) -> str:
    """Why a job is more than a whole month's budget ("" when it is not)."""
    if limits.tokens_per_month is not None and need.tokens > limits.tokens_per_month:
        return (f"this job trains about {need.tokens:,} tokens, more than the account's monthly budget of "
                f"{limits.tokens_per_month:,}: train fewer epochs or rows, or ask an operator to raise the quota")
    if limits.gpu_hours_per_month is not None and need.gpu_hours > limits.gpu_hours_per_month:
        return (f"this job needs about {need.gpu_hours:,.2f} GPU-hours, more than the account's monthly budget of "
                f"{limits.gpu_hours_per_month:g}: train fewer epochs or rows, or ask an operator to raise the quota")
    return ""


# --- the seam: who an account is and what it may use ------------------------------------------------

def account_of(project_id: str) -> str:
    """The account a job of project ``project_id`` counts against (the API's ``organization_id``): the
    project itself."""
    return project_id


def account_project(organization_id: str) -> Project | None:
    """The project whose account ``organization_id`` (``proj_…``) is; None when there is none. The ids of
    accounts from before projects, ``user-<id>``, name that user's personal project (the answer carries
    its ``proj_…`` id)."""
    old = re.fullmatch(r"user-(\d+)", organization_id)
    if old is not None:
        return Project.objects.filter(personal_user_id=int(old.group(1))).first()
    return Project.objects.filter(pk=organization_id).first()


def quota_for(project_id: str) -> Limits:
    """The limits of project ``project_id``'s account: its ``Quota`` row, or none."""
    row = Quota.objects.filter(project_id=project_id).first()
    if row is None:
        return Limits()
    return Limits(max_concurrent_jobs=row.max_concurrent_jobs, gpu_hours_per_month=row.gpu_hours_per_month,
                  tokens_per_month=row.tokens_per_month, priority=row.priority)


# --- usage, from the jobs' rows -----------------------------------------------------------------------

def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _busy_until(job: FineTuneJob, now: datetime) -> datetime:
    """When the job last held its devices: now while running, else its end or its last heartbeat."""
    if job.status == Status.RUNNING:
        return now
    return job.finished_at or job.heartbeat_at or job.started_at


def _device_seconds(job: FineTuneJob, since: datetime, now: datetime) -> float:
    start = max(job.started_at, since)
    seconds = (_busy_until(job, now) - start).total_seconds()
    return max(seconds, 0.0) * job.hyperparameters.get("devices", 1)


def accounts_usage(project_ids: Iterable[str], *, now: datetime | None = None) -> dict[str, Usage]:
    """Each project's usage of this platform's workers (remote providers' jobs are not counted). A job that
    started counts its estimated tokens until it reports the tokens it trained."""
    now = now or timezone.now()
    month = month_start(now)
    window = now - timedelta(hours=settings.FAIR_SHARE_HOURS)
    jobs = FineTuneJob.objects.filter(project_id__in=set(project_ids), provider__isnull=True,
                                      started_at__isnull=False)
    jobs = jobs.exclude(finished_at__lt=min(month, window)).only(
        "project_id", "status", "started_at", "finished_at", "heartbeat_at", "hyperparameters", "trained_tokens",
        "estimate")
    totals: dict[str, dict] = {}
    for job in jobs:
        total = totals.setdefault(job.project_id, {"running": 0, "gpu_seconds": 0.0, "tokens": 0, "recent": 0.0})
        total["running"] += job.status == Status.RUNNING
        total["recent"] += _device_seconds(job, window, now)
        if job.started_at >= month:
            total["gpu_seconds"] += _device_seconds(job, month, now)
            total["tokens"] += job.trained_tokens if job.trained_tokens is not None else job_need(job).tokens
    return {project: Usage(running=t["running"], gpu_hours=t["gpu_seconds"] / 3600, tokens=t["tokens"],
                           recent_seconds=t["recent"]) for project, t in totals.items()}


def job_need(job: FineTuneJob) -> Need:
    """What the job will use by its estimate: tokens, and device-hours where past runs give a pace."""
    estimate = job.estimate or {}
    seconds = estimate.get("seconds") or 0.0
    return Need(gpu_hours=seconds * job.hyperparameters.get("devices", 1) / 3600,
                tokens=int(estimate.get("tokens") or 0))


# --- the queue ----------------------------------------------------------------------------------------

def claims_serialize() -> None:
    """Hold the claim lock until the transaction ends: the counts a claim reads (running jobs, usage)
    cannot change under it. SQLite (the embedded default) serializes writers by itself."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CLAIM_LOCK])


def queue_ordered() -> list[tuple[FineTuneJob, str]]:
    """The local queued jobs in the order workers take them, each with why it must wait ("" if it need not)."""
    jobs = {job.id: job for job in FineTuneJob.objects.filter(status=Status.QUEUED, provider__isnull=True)}
    projects = {job.project_id for job in jobs.values()}
    limits = {project: quota_for(project) for project in projects}
    usage = accounts_usage(projects)
    queued = [Queued(job_id=job.id, account=account_of(job.project_id), priority=limits[job.project_id].priority,
                     recent_seconds=usage.get(job.project_id, Usage()).recent_seconds, created_at=job.created_at)
              for job in jobs.values()]
    ordered = []
    for entry in queue_order(queued):
        job = jobs[entry.job_id]
        # a job that ran before (requeued) is counted in its account's usage already
        need = Need() if job.started_at else job_need(job)
        ordered.append((job, quota_problem(limits[job.project_id], usage.get(job.project_id, Usage()), need)))
    return ordered


def job_quota_check(*, owner, need: Need) -> None:
    """Refuse a job that could never start under its account's monthly budget (a 400 naming
    ``training_file``, where its tokens come from)."""
    problem = quota_never_fits(quota_for(project_acting(owner).id), need)
    if problem:
        raise InvalidRequest(problem[0].upper() + problem[1:], param="training_file", code="quota_exceeded")


def quota_needs_estimate(owner) -> bool:
    """Whether the account has a budget a job's estimate must be checked against."""
    limits = quota_for(project_acting(owner).id)
    return limits.tokens_per_month is not None or limits.gpu_hours_per_month is not None


QUOTA_FIELDS = ("max_concurrent_jobs", "gpu_hours_per_month", "tokens_per_month", "priority")


def quota_set(*, project: Project, values: dict) -> Quota:
    """Set the given fields of ``project``'s account quota (staff); None clears a limit. Zero or less is
    refused by the model's own rule (the admin's), as a 400 naming the field; nothing is stored."""
    quota = Quota.objects.filter(project=project).first() or Quota(project=project)
    for name in QUOTA_FIELDS:
        if name in values:
            setattr(quota, name, values[name])
    try:
        quota.full_clean()
    except ValidationError as error:
        name, messages = next(iter(error.message_dict.items()))
        raise InvalidRequest(f"{name} {messages[0]}", param=name, code="invalid_quota") from error
    quota.save()
    return quota
