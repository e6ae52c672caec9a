from django.conf import settings
from django.db import models

from jobs_app.models import Checkpoint
from models_app.base_models.models import BaseModel, UsageSampleFields, UsageTotals


class FineTunedModel(models.Model):
    """What a succeeded job produced: an adapter (or full weights) in storage."""

    id = models.CharField(primary_key=True, max_length=255, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="models")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    job = models.OneToOneField("jobs_app.FineTuneJob", on_delete=models.CASCADE, related_name="result_model")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="fine_tuned")
    name = models.CharField(max_length=200)
    adapter = models.CharField(max_length=20, help_text="lora, qlora or full (workers.hyperparameters).")
    adapter_path = models.CharField(max_length=500, help_text="Storage prefix of the adapter files.")
    artifact_files = models.JSONField(default=list, help_text="Storage names under adapter_path.")
    version = models.PositiveIntegerField(default=1, help_text="1, 2, 3, ... per project and name: the order made.")
    major = models.PositiveIntegerField(default=1, help_text="Semantic version (major.minor.patch), bumped by rule.")
    minor = models.PositiveIntegerField(default=0)
    patch = models.PositiveIntegerField(default=0)
    card = models.TextField(blank=True, help_text="The model card (Markdown): generated, then editable.")
    card_edited_at = models.DateTimeField(null=True, blank=True, help_text="When a person last edited the card.")
    checkpoint = models.ForeignKey("jobs_app.Checkpoint", on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+", help_text="The job's last checkpoint before these weights.")
    promotion = models.JSONField(default=dict, blank=True,
                                 help_text="The promotion gate's decision: metric, base, tuned, passed, reason.")
    archived_at = models.DateTimeField(null=True, blank=True, help_text="Archived versions cannot get aliases.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["project", "name", "version"], name="model_version_unique"),
                       models.UniqueConstraint(fields=["project", "name", "major", "minor", "patch"],
                                               name="model_semver_unique")]

    def __str__(self) -> str:
        return self.id

    @property
    def semver(self) -> str:
        """``1.4.0``: the version the API and pages show."""
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def reference(self) -> str:
        """``name@1.4.0``: how callers name this version in the registry and the API (``name@vN`` works too)."""
        return f"{self.name}@{self.semver}"


class ModelUsage(UsageTotals):
    """Chat totals of one version, counted by the inference worker as each reply finishes."""

    model = models.OneToOneField(FineTunedModel, on_delete=models.CASCADE, primary_key=True, related_name="usage")


class UsageSample(UsageSampleFields):
    """One chat request of a version (``UsageSampleFields``)."""

    model = models.ForeignKey(FineTunedModel, on_delete=models.CASCADE, related_name="usage_samples")

    class Meta:
        indexes = [models.Index(fields=["model", "-id"])]


class ModelAlias(models.Model):
    """A tag such as ``production`` pointing at one version of an owner's model name."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="model_aliases")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    alias = models.CharField(max_length=50)
    model = models.ForeignKey(FineTunedModel, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "model aliases"
        ordering = ["name", "alias"]
        constraints = [models.UniqueConstraint(fields=["project", "name", "alias"], name="model_alias_unique")]

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"


class AliasChange(models.Model):
    """The history of an alias: what it pointed at before each promotion or rollback."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    alias = models.CharField(max_length=50)
    model = models.ForeignKey(FineTunedModel, on_delete=models.SET_NULL, null=True, related_name="+")
    previous = models.ForeignKey(FineTunedModel, on_delete=models.SET_NULL, null=True, related_name="+")
    action = models.CharField(max_length=20, help_text="promote, gate or rollback")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class Export(models.Model):
    """A fine-tuned model exported as an adapter, a merged model or GGUF (language models), or as
    TorchScript or ONNX (image classifiers); offered only once verified."""

    class Kind(models.TextChoices):
        ADAPTER = "adapter"
        MERGED = "merged"
        GGUF = "gguf"
        TORCHSCRIPT = "torchscript"
        ONNX = "onnx"

    class Quantization(models.TextChoices):
        F32 = "f32"
        F16 = "f16"
        Q8_0 = "q8_0"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        VERIFIED = "verified"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    model = models.ForeignKey(FineTunedModel, on_delete=models.CASCADE, related_name="exports", null=True,
                              blank=True, help_text="The exported model; its owner owns the export.")
    checkpoint = models.ForeignKey("jobs_app.Checkpoint", on_delete=models.CASCADE, related_name="exports",
                                   null=True, blank=True,
                                   help_text="Or the exported checkpoint of a job; its job's owner owns the export.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    quantization = models.CharField(max_length=10, choices=Quantization.choices, default=Quantization.F32)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done (load, write, verify).")
    error = models.TextField(blank=True, help_text="Why the export failed (verification or writing).")
    storage_path = models.CharField(max_length=500, blank=True,
                                    help_text="Storage name of the zip (adapter, merged, torchscript, onnx) or .gguf "
                                              "file.")
    size_bytes = models.PositiveBigIntegerField(default=0)
    verification = models.JSONField(default=dict, blank=True,
                                    help_text="Per-prompt (image classifiers: per-image) comparison with the source "
                                              "model and the tolerance.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(
            condition=models.Q(model__isnull=False, checkpoint__isnull=True)
            | models.Q(model__isnull=True, checkpoint__isnull=False), name="export_has_one_source")]

    def __str__(self) -> str:
        return self.id

    @property
    def source(self) -> "FineTunedModel | Checkpoint":
        """What was exported: the fine-tuned model or the checkpoint."""
        return self.model or self.checkpoint

    @property
    def source_id(self) -> str:
        """The source as callers name it: the model id, or the checkpoint's ``fine_tuned_model_checkpoint``."""
        return self.model_id or self.checkpoint.fine_tuned_model_checkpoint

    @property
    def artifact(self) -> str:
        """The ``artifact`` name the download endpoint serves it under (merged, gguf-f16, ...)."""
        return f"gguf-{self.quantization}" if self.kind == self.Kind.GGUF else self.kind

    @property
    def filename(self) -> str:
        stem = f"{self.source_id.replace(':', '_')}-{self.artifact}"
        return f"{stem}.gguf" if self.kind == self.Kind.GGUF else f"{stem}.zip"


# Only models_app.services.exports writes Export.status. running → running: a redelivered task
# (its worker died) takes the export again.
EXPORT_TRANSITIONS: dict[str, set[str]] = {
    Export.Status.PENDING: {Export.Status.RUNNING, Export.Status.FAILED},
    Export.Status.RUNNING: {Export.Status.RUNNING, Export.Status.VERIFIED, Export.Status.FAILED},
    Export.Status.VERIFIED: set(),
    Export.Status.FAILED: set(),
}


class Evaluation(models.Model):
    """Metrics of a model (and of its base, on the same rows) on a dataset; per-row outputs kept."""

    class Kind(models.TextChoices):
        AUTO = "auto", "at the end of the job"
        ON_DEMAND = "on_demand", "on demand"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=40, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="evaluations")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(FineTunedModel, on_delete=models.CASCADE, null=True, blank=True,
                              related_name="evaluations", help_text="Empty: the base model alone.")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="evaluations")
    dataset = models.ForeignKey("datasets_app.Dataset", on_delete=models.PROTECT, related_name="evaluations")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ON_DEMAND)
    compare_base = models.BooleanField(default=True)
    checkpoints = models.BooleanField(default=False, help_text="Also evaluate every checkpoint of the job.")
    max_rows = models.PositiveIntegerField(default=100)
    max_new_tokens = models.PositiveIntegerField(default=32)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent of rows scored.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Target (base, tuned, checkpoint-N) → metrics.")
    rows = models.JSONField(default=list, blank=True, help_text="Per-row prompt, reference, outputs and loss.")
    rows_evaluated = models.PositiveIntegerField(default=0)
    classification = models.BooleanField(default=False, help_text="References look like labels: accuracy applies.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="When a worker began scoring.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def duration_seconds(self) -> float | None:
        return (self.finished_at - self.created_at).total_seconds() if self.finished_at else None


# Only models_app.services.evaluations writes Evaluation.status (running → running: as exports).
EVALUATION_TRANSITIONS: dict[str, set[str]] = {
    Evaluation.Status.QUEUED: {Evaluation.Status.RUNNING, Evaluation.Status.FAILED},
    Evaluation.Status.RUNNING: {Evaluation.Status.RUNNING, Evaluation.Status.SUCCEEDED, Evaluation.Status.FAILED},
    Evaluation.Status.SUCCEEDED: set(),
    Evaluation.Status.FAILED: set(),
}


class StoredCompletion(models.Model):
    """A chat completion kept for the data loop: what was asked, what was answered, by which model
    version; rated or corrected by its owner, and made into datasets (the ``datasets`` it went into are
    its lineage). Served with ``store: true`` or imported from an OpenAI-format export."""

    class Source(models.TextChoices):
        SERVED = "served"
        IMPORTED = "imported"

    class Rating(models.IntegerChoices):
        DOWN = -1, "down"
        UP = 1, "up"

    id = models.CharField(primary_key=True, max_length=64, editable=False, help_text="chatcmpl-…")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stored_completions")
    model = models.CharField(max_length=255, help_text="The model id the caller named (as answered).")
    model_version = models.CharField(max_length=255, blank=True,
                                     help_text="The version that answered: name@vN, a checkpoint or a base model.")
    messages = models.JSONField(help_text="The request's messages, as the model read them.")
    choices = models.JSONField(default=list, help_text="The answers: [{index, message, finish_reason}].")
    usage = models.JSONField(default=dict, blank=True)
    request = models.JSONField(default=dict, blank=True, help_text="Sampling settings of the request.")
    metadata = models.JSONField(default=dict, blank=True, help_text="OpenAI's metadata: string keys and values.")
    rating = models.SmallIntegerField(choices=Rating.choices, null=True, blank=True)
    correction = models.TextField(blank=True, help_text="The owner's better answer; wins in a dataset.")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.SERVED)
    datasets = models.ManyToManyField("datasets_app.Dataset", blank=True, related_name="+",
                                      help_text="Datasets made from this completion.")
    created_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True,
                                      help_text="Deleted after this (the owner's retention setting).")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["owner", "created_at"]), models.Index(fields=["owner", "model"])]

    def __str__(self) -> str:
        return self.id

    @property
    def answer(self) -> str:
        """The first choice's text, as served."""
        return ((self.choices[0].get("message") or {}).get("content") or "") if self.choices else ""

    @property
    def final_answer(self) -> str:
        """What a dataset learns: the correction when there is one, else the answer."""
        return self.correction or self.answer


class CompletionSettings(models.Model):
    """An owner's data-loop settings (the owner is the project here): how long stored completions are kept."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                 related_name="completion_settings")
    retention_days = models.PositiveIntegerField(help_text="Days a stored completion is kept; 0 keeps it for ever.")
