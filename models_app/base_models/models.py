from django.conf import settings
from django.db import models

BUILTIN_PREFIX = "builtin:"
ARCHIVE_PREFIX = "archive:"
REMOTE_PREFIX = "remote:"  # a remote provider's model, named by a job on that provider: no files here


class BaseModel(models.Model):
    """A model jobs start from: built in, a directory on the workers' shared storage, a Hugging Face hub
    id, or an uploaded archive. Shared (added by an operator, ``owner`` empty) or one user's own.

    A remote provider's model (``remote:<provider>``, e.g. gpt-4o-mini-2024-07-18) is registered, shared,
    when a job on a provider first names it: only jobs on a provider can use it (the provider checks the
    name); it has no files here for local jobs, chat, evaluations or exports."""

    class Status(models.TextChoices):
        PENDING = "pending"  # registered; a worker is reading its config and tokenizer
        READY = "ready"
        FAILED = "failed"

    name = models.CharField(max_length=200, unique=True, help_text="The id callers use, e.g. tiny-llama.")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="base_models", help_text="Empty: shared by an operator with every user.")
    source = models.CharField(
        max_length=500, help_text="builtin:NAME, an absolute directory, a hub id like org/model, or archive:STORED."
    )
    revision = models.CharField(max_length=200, blank=True, help_text="A hub id's branch, tag or commit.")
    # Rows an operator types in the admin are ready as typed; registrations start pending.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    error = models.TextField(blank=True)
    local_path = models.CharField(max_length=1000, blank=True,
                                  help_text="Where a hub id or archive was put on the workers' storage.")
    architecture = models.CharField(max_length=100, blank=True, help_text="config.json's architectures[0].")
    family = models.CharField(max_length=50, default="llama", help_text="config.json's model_type.")
    chat_template = models.TextField(blank=True, help_text="Empty: the tokenizer's own template.")
    parameters = models.PositiveBigIntegerField(null=True, blank=True)
    context_length = models.PositiveIntegerField(default=2048)
    dtype = models.CharField(max_length=20, blank=True, help_text="The weights' dtype as saved.")
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True, help_text="Size of its files on disk.")
    license = models.CharField(max_length=200, blank=True)
    shape = models.JSONField(default=dict, blank=True,
                             help_text="hidden_size, layers, intermediate_size, vocab_size (memory estimates).")
    created_at = models.DateTimeField(auto_now_add=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        db_table = "models_app_basemodel"  # the table it had when it lived in models_app

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.source.startswith(BUILTIN_PREFIX)

    @property
    def is_archive(self) -> bool:
        return self.source.startswith(ARCHIVE_PREFIX)

    @property
    def is_remote(self) -> bool:
        return self.source.startswith(REMOTE_PREFIX)


# The one table of legal status changes; ``base_model_transition`` is its only writer.
BASE_MODEL_TRANSITIONS: dict[str, set[str]] = {
    BaseModel.Status.PENDING: {BaseModel.Status.READY, BaseModel.Status.FAILED},
    BaseModel.Status.READY: set(),
    BaseModel.Status.FAILED: set(),
}


USAGE_SAMPLES_KEPT = 1000  # per model: the window of the latency percentiles


class UsageTotals(models.Model):
    """Chat totals of one model (a base model, or a fine-tuned version), counted by the inference worker
    as each reply finishes."""

    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    last_request_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class UsageSampleFields(models.Model):
    """One chat request of a model: its latency and tokens. Only the newest ``USAGE_SAMPLES_KEPT`` per
    model are kept (the percentiles' window); the totals live in ``UsageTotals``."""

    latency_ms = models.FloatField(help_text="From the worker taking the request to the whole reply.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class BaseModelUsage(UsageTotals):
    base_model = models.OneToOneField(BaseModel, on_delete=models.CASCADE, primary_key=True, related_name="usage")


class BaseModelUsageSample(UsageSampleFields):
    base_model = models.ForeignKey(BaseModel, on_delete=models.CASCADE, related_name="usage_samples")

    class Meta:
        indexes = [models.Index(fields=["base_model", "-id"])]
