
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from finetune_site.ids import new_id
from workers.hyperparameters import OBJECTIVES


def new_job_id() -> str:
    return new_id("ftjob")


def new_event_id() -> str:
    return new_id("ftevent")


def new_checkpoint_id() -> str:
    return new_id("ftckpt")


def new_provider_id() -> str:
    return new_id("prov")


class Provider(models.Model):
    """Where a job can run besides this platform's workers: an OpenAI-compatible fine-tuning API.

    ``owner`` None: the operator's, usable by everyone. The API key is stored sealed
    (``finetune_site.crypto``) and never shown again, only its last characters.
    """

    class Kind(models.TextChoices):
        OPENAI = "openai"

    id = models.CharField(primary_key=True, max_length=40, default=new_provider_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="providers", help_text="Empty: the operator's, for every user.")
    name = models.CharField(max_length=64, help_text="What a job names in its provider field.")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500, help_text="e.g. https://api.openai.com/v1")
    api_key_sealed = models.TextField(help_text="The API key, encrypted (Fernet).")
    api_key_hint = models.CharField(max_length=8, blank=True, help_text="The key's last characters.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="provider_name_unique"),
            models.UniqueConstraint(fields=["name"], condition=models.Q(owner__isnull=True),
                                    name="provider_shared_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class FineTuneJob(models.Model):
    class Status(models.TextChoices):
        VALIDATING_FILES = "validating_files"
        QUEUED = "queued"
        RUNNING = "running"
        PAUSED = "paused"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    # What the model learns from (the API's ``method.type``), as declared in workers.hyperparameters.
    Objective = models.TextChoices("Objective", [(name.upper(), name) for name in OBJECTIVES])

    class StopRequest(models.TextChoices):
        NONE = "", "none"
        PAUSE = "pause"
        REQUEUE = "requeue"

    id = models.CharField(primary_key=True, max_length=40, default=new_job_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey("datasets_app.Dataset", on_delete=models.PROTECT, related_name="jobs")
    validation_dataset = models.ForeignKey(
        "datasets_app.Dataset", on_delete=models.PROTECT, null=True, blank=True, related_name="validation_jobs"
    )
    base_model = models.ForeignKey("base_models.BaseModel", on_delete=models.PROTECT, related_name="jobs")
    objective = models.CharField(max_length=20, choices=Objective.choices, default=Objective.SUPERVISED)
    hyperparameters = models.JSONField(default=dict, help_text="Resolved: no 'auto' left.")
    grader = models.JSONField(default=dict, blank=True, help_text="Reinforcement and RLAIF: what scores the samples "
                                                                  "(workers.graders); empty otherwise.")
    preference_dataset = models.ForeignKey(
        "datasets_app.Dataset", on_delete=models.SET_NULL, null=True, blank=True, related_name="judged_by_jobs",
        help_text="RLAIF: the preference pairs the judge ranked, a version of the prompts; DPO trained on it.")
    suffix = models.CharField(max_length=64, blank=True)
    version = models.CharField(max_length=32, blank=True,
                               help_text="The registry version the model must get (1.4.0); empty: by the bump rule.")
    seed = models.IntegerField(default=42, help_text="Drawn at random when the request gives none.")
    metadata = models.JSONField(default=dict, blank=True, help_text="The caller's key-value strings (OpenAI's).")
    integrations = models.JSONField(default=list, blank=True, help_text="The experiment trackers the run reports "
                                    'to, checked: [{"type": "wandb", "wandb": {...}}, ...] (OpenAI\'s shape).')
    promotion_gate = models.JSONField(default=dict, blank=True,
                                      help_text="{metric, min_improvement or threshold, alias}; empty: none.")
    evaluate_checkpoints = models.BooleanField(default=False, help_text="Evaluate every checkpoint, mark the best.")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, null=True, blank=True, related_name="jobs",
                                 help_text="Where it runs: empty for this platform's workers (local).")
    remote_job_id = models.CharField(max_length=200, blank=True, help_text="The provider's id of the job.")
    remote_files = models.JSONField(default=dict, blank=True, help_text="{training_file, validation_file} there.")
    remote_model = models.CharField(max_length=300, blank=True, help_text="The provider's fine_tuned_model id.")
    cost = models.JSONField(default=dict, blank=True, help_text="What the run cost: {amount, currency, basis, ...}.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING_FILES)
    attempt = models.PositiveIntegerField(default=0, help_text="Fencing token: +1 at every claim.")
    max_attempts = models.PositiveIntegerField(default=3)
    lease_owner = models.CharField(max_length=200, blank=True, help_text="Worker holding the job.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    stop_request = models.CharField(max_length=10, choices=StopRequest.choices, blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True, help_text="Final: wall time, tokens/s, peak memory.")
    vision = models.JSONField(default=dict, blank=True, help_text="Vision: {strategy, design, evaluation} of the "
                                                                   "trained classifier (workers.vision).")
    estimate = models.JSONField(default=dict, blank=True, help_text="Before start: tokens, steps, seconds, memory.")
    estimated_finish = models.DateTimeField(null=True, blank=True, help_text="Refined live from step times.")
    wait_reason = models.CharField(max_length=300, blank=True, help_text="Why a queued job is not running.")
    gang = models.JSONField(default=dict, blank=True, help_text=(
        "A job over several nodes: {token, endpoint, nodes, members (worker names, first node first), since, "
        "attempt once claimed}; jobs_app.services.gangs."))
    error = models.JSONField(null=True, blank=True, help_text="{code, message, param} when failed.")
    trained_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    result_file = models.ForeignKey("datasets_app.Dataset", on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+", help_text="The step metrics as CSV, when the job succeeded.")
    event_seq = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"]), models.Index(fields=["status"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=[
                    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled",
                ]),
                name="job_status_valid",
            )
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def fine_tuned_model_name(self) -> str:
        """OpenAI's ``ft:<base model>:<org>:<suffix>:<id>``, the id of the model this job makes, known from the
        start: its checkpoints are named after it. The org is the job's project id (``proj_…``)."""
        return f"ft:{self.base_model.name}:{self.project_id}:{self.suffix}:{self.id.removeprefix('ftjob-')[:8]}"

    @property
    def run_seconds(self) -> float | None:
        """From the first claim to the end (queue time before it not counted)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


FINISHED = {FineTuneJob.Status.SUCCEEDED, FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED}

# The one table of legal status changes; only jobs_app.services.job_transition reads it.
ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    FineTuneJob.Status.VALIDATING_FILES: {
        FineTuneJob.Status.QUEUED, FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED,
    },
    FineTuneJob.Status.QUEUED: {
        FineTuneJob.Status.RUNNING, FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED,
        FineTuneJob.Status.PAUSED,
    },
    FineTuneJob.Status.RUNNING: {
        FineTuneJob.Status.SUCCEEDED, FineTuneJob.Status.FAILED, FineTuneJob.Status.CANCELLED,
        FineTuneJob.Status.QUEUED, FineTuneJob.Status.PAUSED,
    },
    FineTuneJob.Status.PAUSED: {FineTuneJob.Status.QUEUED, FineTuneJob.Status.CANCELLED},
    FineTuneJob.Status.SUCCEEDED: set(),
    FineTuneJob.Status.FAILED: set(),
    FineTuneJob.Status.CANCELLED: set(),
}


class JobEvent(models.Model):
    """The durable log and metric history of a job, numbered per job by ``seq``."""

    class Level(models.TextChoices):
        INFO = "info"
        WARN = "warn"
        ERROR = "error"

    class Type(models.TextChoices):
        MESSAGE = "message"
        METRICS = "metrics"

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.MESSAGE)
    message = models.TextField()
    data = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="", help_text="The request (X-Request-ID) "
                                  "on whose behalf it was written, carried into the tasks that request queued.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_event_seq_unique")]

    def __str__(self) -> str:
        return f"{self.job_id}#{self.seq}"


REMOTE_PREFIX = "remote:"  # a checkpoint held by the provider, not in our storage


class Checkpoint(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_checkpoint_id, editable=False)
    job = models.ForeignKey(FineTuneJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    storage_path = models.CharField(max_length=500, help_text="Storage prefix of the checkpoint files.")
    metrics = models.JSONField(default=dict, blank=True)
    is_best = models.BooleanField(default=False, help_text="Best of the job's checkpoints by the evaluation.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "-step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="checkpoint_step_unique")]

    def __str__(self) -> str:
        return f"{self.job_id}@{self.step}"

    @property
    def fine_tuned_model_checkpoint(self) -> str:
        """OpenAI's name of the checkpoint as a model: the job's model id and ``:ckpt-step-<step>`` (a
        remote job's checkpoint keeps the provider's name, stored as ``remote:<name>``)."""
        if self.storage_path.startswith(REMOTE_PREFIX):
            return self.storage_path.removeprefix(REMOTE_PREFIX)
        return f"{self.job.fine_tuned_model_name}:ckpt-step-{self.step}"


class Worker(models.Model):
    """A Celery worker that trains, and the devices it advertised when it started."""

    name = models.CharField(max_length=200, unique=True)
    devices = models.JSONField(default=dict, help_text="{kind, count, names, memory_bytes, bf16, cpus}")
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def capacity(self) -> int:
        """How many training processes a job may run here: one per GPU, else per CPU core."""
        return self.devices.get("count") or self.devices.get("cpus", 1)


def _positive(value) -> None:
    if value is not None and value <= 0:
        raise ValidationError("must be above 0; leave it empty for no limit")


class Quota(models.Model):
    """An account's limits and its priority in the queue, set by operators (admin, or the staff API).

    The account is the job's project (the API's ``organization_id``, ``proj_…``); the scheduler reaches
    quotas only through ``jobs_app.services.quotas.account_of`` and ``quota_for``.
    Empty limits: none. No row: no limits, priority 0.
    """

    project = models.OneToOneField("accounts_app.Project", on_delete=models.CASCADE, related_name="quota")
    max_concurrent_jobs = models.PositiveIntegerField(
        null=True, blank=True, validators=[_positive], help_text="Jobs running at once; more wait in the queue.")
    gpu_hours_per_month = models.FloatField(
        null=True, blank=True, validators=[_positive],
        help_text="Device-hours per calendar month (UTC): a job's devices × its hours (a CPU worker's processes "
                  "count as devices).")
    tokens_per_month = models.PositiveBigIntegerField(
        null=True, blank=True, validators=[_positive], help_text="Training tokens per calendar month (UTC).")
    priority = models.IntegerField(default=0, help_text="Higher goes first; equal priorities share by recent usage.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(max_concurrent_jobs__gt=0) | models.Q(
                max_concurrent_jobs__isnull=True), name="quota_concurrent_positive"),
            models.CheckConstraint(condition=models.Q(gpu_hours_per_month__gt=0) | models.Q(
                gpu_hours_per_month__isnull=True), name="quota_gpu_hours_positive"),
            models.CheckConstraint(condition=models.Q(tokens_per_month__gt=0) | models.Q(
                tokens_per_month__isnull=True), name="quota_tokens_positive"),
        ]

    def __str__(self) -> str:
        return f"quota of {self.project_id}"
