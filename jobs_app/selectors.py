"""Reads of jobs shared by views, the API and the CLI."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.http import Http404
from django.utils import timezone

from accounts_app.selectors import project_acting
from jobs_app.models import Checkpoint, FineTuneJob, JobEvent, Provider, Worker


def jobs_visible_to(user) -> QuerySet[FineTuneJob]:
    """The jobs of the project ``user`` acts in."""
    return FineTuneJob.objects.filter(project=project_acting(user)).select_related(
        "dataset", "validation_dataset", "base_model", "provider"
    )


def jobs_with_metadata(jobs: QuerySet[FineTuneJob], metadata: dict[str, str]) -> QuerySet[FineTuneJob]:
    """The jobs whose metadata holds every pair of ``metadata`` (a key is taken whole, even with ``__`` in it;
    ``contains`` would need PostgreSQL)."""
    for index, (key, value) in enumerate(metadata.items()):
        jobs = jobs.annotate(**{f"metadata_{index}": KeyTextTransform(key, "metadata")}).filter(
            **{f"metadata_{index}": value})
    return jobs


def job_get(user, job_id: str) -> FineTuneJob:
    """A job of the user's project, or 404 (another project's job does not exist for them)."""
    job = jobs_visible_to(user).filter(pk=job_id).first()
    if job is None:
        raise Http404(f"No such fine-tuning job: {job_id}")
    return job


def job_misclassified_thumbnail(job: FineTuneJob, index: int) -> str:
    """The storage name of the thumbnail of a vision job's ``index``-th misclassified image, or 404."""
    mistakes = ((job.vision or {}).get("evaluation") or {}).get("misclassified") or []
    if not 0 <= index < len(mistakes) or not mistakes[index].get("thumbnail"):
        raise Http404(f"No such misclassified image: {index}")
    return mistakes[index]["thumbnail"]


CHECKPOINT_STEP = ":ckpt-step-"


def checkpoint_find(reference: str, *, owner=None) -> Checkpoint | None:
    """A checkpoint named as a model: its id (``ftckpt-…``) or its ``fine_tuned_model_checkpoint`` name
    (``ft:<base>:<org>:<suffix>:<id>:ckpt-step-<step>``, or ``<job id>:ckpt-step-<step>`` as named before);
    of the project ``owner`` acts in only, when given."""
    checkpoints = Checkpoint.objects.select_related("job__owner", "job__base_model")
    if owner is not None:
        checkpoints = checkpoints.filter(job__project=project_acting(owner))
    if reference.startswith("ftckpt-"):
        return checkpoints.filter(pk=reference).first()
    model, _, step = reference.rpartition(CHECKPOINT_STEP)
    if not model or not step.isdigit():
        return None
    if model.startswith("ftjob-"):
        return checkpoints.filter(job_id=model, step=int(step)).first()
    candidates = checkpoints.filter(step=int(step), job__id__startswith="ftjob-" + model.rpartition(":")[2])
    return next((c for c in candidates[:10] if c.job.fine_tuned_model_name == model), None)


ACTIVE = (FineTuneJob.Status.VALIDATING_FILES, FineTuneJob.Status.QUEUED, FineTuneJob.Status.RUNNING)


def jobs_active_for(user, limit: int = 20) -> list[FineTuneJob]:
    """The user's unfinished jobs, with ``last_metric`` and ``first_metric``(``_at``) annotated."""
    metrics = JobEvent.objects.filter(job=OuterRef("pk"), type=JobEvent.Type.METRICS)
    return list(jobs_visible_to(user).filter(status__in=ACTIVE).annotate(
        last_metric=Subquery(metrics.order_by("-seq").values("data")[:1]),
        first_metric=Subquery(metrics.order_by("seq").values("data")[:1]),
        first_metric_at=Subquery(metrics.order_by("seq").values("created_at")[:1]),
    )[:limit])


@dataclass(frozen=True)
class JobProgress:
    """Where a run stands, derived from its newest metric event and its timestamps."""

    step: int = 0
    total_steps: int = 0
    tokens: int = 0
    train_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 0.0


def job_progress(job: FineTuneJob, metric: dict | None, *, first: tuple[dict, datetime] | None = None,
                 now: datetime | None = None) -> JobProgress:
    """Progress of ``job`` given its newest metric data.

    Tokens/s are measured from ``first`` (the first metric event's data and time), so the model
    loading before the first step does not count as training; without it, from the start. The ETA
    is the worker's, for the whole job, counted down from when its newest step ended.
    """
    metric = metric or {}
    step, total = int(metric.get("step") or 0), int(metric.get("total_steps") or 0)
    if job.status == FineTuneJob.Status.SUCCEEDED and total:
        step = total
    tokens = int(metric.get("tokens") or 0)
    end = job.finished_at or now or timezone.now()
    base_tokens, since = 0, job.started_at
    if first is not None and int(first[0].get("step") or 0) < step:
        base_tokens, since = int(first[0].get("tokens") or 0), first[1]
    elapsed = (end - since).total_seconds() if since else 0.0
    running = job.status == FineTuneJob.Status.RUNNING
    return JobProgress(
        step=step, total_steps=total, tokens=tokens,
        train_loss=metric.get("train_loss"), learning_rate=metric.get("learning_rate"),
        tokens_per_second=(tokens - base_tokens) / elapsed if elapsed > 0 and tokens > base_tokens else None,
        eta_seconds=_eta(metric, end) if running else None,
    )


def _eta(metric: dict, now: datetime) -> float | None:
    """The worker's ETA for the whole job (steps, passes, checkpoints, then finishing and the
    evaluation), counted down from when its step ended; None until a few steps are timed."""
    if metric.get("eta_seconds") is None or metric.get("time") is None:
        return None
    return max(0.0, metric["eta_seconds"] - (now.timestamp() - metric["time"]))


def job_first_metric(job: FineTuneJob) -> tuple[dict, datetime] | None:
    """The data and time of the job's first metric event: where its measured training time starts."""
    return (job.events.filter(type=JobEvent.Type.METRICS).order_by("seq")
            .values_list("data", "created_at").first())


def job_last_metric(job: FineTuneJob) -> dict | None:
    return (job.events.filter(type=JobEvent.Type.METRICS).order_by("-seq")
            .values_list("data", flat=True).first())


def job_history(job: FineTuneJob, *, after_seq: int = 0, limit: int | None = None) -> list[JobEvent]:
    """The job's events after ``after_seq`` in sequence order: the log and metric history."""
    events = job.events.filter(seq__gt=after_seq).order_by("seq")
    return list(events[:limit] if limit else events)


def providers_visible_to(user) -> QuerySet[Provider]:
    """The user's providers and the operator's (shared) ones."""
    return Provider.objects.filter(Q(owner=user) | Q(owner__isnull=True))


def provider_named(user, name: str) -> Provider | None:
    """The provider a job names: the user's own of that name first, else the operator's."""
    found = {p.owner_id: p for p in providers_visible_to(user).filter(name=name)}
    return found.get(user.id) or found.get(None)


def provider_get(user, provider_id: str) -> Provider:
    provider = providers_visible_to(user).filter(pk=provider_id).first()
    if provider is None:
        raise Http404(f"No such provider: {provider_id}")
    return provider


def jobs_ahead_of(job: FineTuneJob) -> tuple[int, int]:
    """(running, waiting): the jobs on this platform's own workers that hold one now, and the others queued
    before ``job``; what a queued job waits for (fair share may still reorder the waiting ones)."""
    local = FineTuneJob.objects.filter(provider__isnull=True).exclude(pk=job.pk)
    running = local.filter(status=FineTuneJob.Status.RUNNING).count()
    waiting = local.filter(status=FineTuneJob.Status.QUEUED, created_at__lt=job.created_at).count()
    return running, waiting


WORKER_ALIVE_PERIODS = 3  # beats a worker may miss (a slow database, a busy host) before it counts as gone


def worker_alive_seconds() -> int:
    """How long a registered worker may go unseen and still count as alive."""
    return WORKER_ALIVE_PERIODS * settings.WORKER_HEARTBEAT_SECONDS


def worker_is_alive(worker: Worker) -> bool:
    return worker.last_seen >= timezone.now() - timedelta(seconds=worker_alive_seconds())


def workers_alive() -> QuerySet[Worker]:
    """The registered training workers seen lately (each refreshes its ``last_seen`` every
    ``WORKER_HEARTBEAT_SECONDS``, idle or not): what the scheduler and the fit check may count on. A worker
    killed without unregistering (``kill -9``, a lost host) keeps its row but drops out of this."""
    return Worker.objects.filter(last_seen__gte=timezone.now() - timedelta(seconds=worker_alive_seconds()))
