from django.conf import settings
from django.db import models

BUILTIN_PREFIX = "builtin:"


class BaseModel(models.Model):
    """A model jobs start from: built in, a local path or a Hugging Face hub id."""

    name = models.CharField(max_length=200, unique=True, help_text="The id callers use, e.g. tiny-llama.")
    source = models.CharField(
        max_length=500, help_text="builtin:NAME, an absolute local path, or a hub id like org/model."
    )
    family = models.CharField(max_length=50, default="llama")
    chat_template = models.TextField(blank=True, help_text="Empty: the tokenizer's own template.")
    parameters = models.PositiveBigIntegerField(null=True, blank=True)
    context_length = models.PositiveIntegerField(default=2048)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_builtin(self) -> bool:
        return self.source.startswith(BUILTIN_PREFIX)


class FineTunedModel(models.Model):
    """What a succeeded job produced: an adapter (or full weights) in storage."""

    id = models.CharField(primary_key=True, max_length=255, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="models")
    job = models.OneToOneField("jobs_app.FineTuneJob", on_delete=models.CASCADE, related_name="result_model")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="fine_tuned")
    name = models.CharField(max_length=200)
    method = models.CharField(max_length=20)
    adapter_path = models.CharField(max_length=500, help_text="Storage prefix of the adapter files.")
    artifact_files = models.JSONField(default=list, help_text="Storage names under adapter_path.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id


class Export(models.Model):
    """A fine-tuned model exported as an adapter, a merged model or GGUF; offered only once verified."""

    class Kind(models.TextChoices):
        ADAPTER = "adapter"
        MERGED = "merged"
        GGUF = "gguf"

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
    model = models.ForeignKey(FineTunedModel, on_delete=models.CASCADE, related_name="exports",
                              help_text="The exported model; its owner owns the export.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    quantization = models.CharField(max_length=10, choices=Quantization.choices, default=Quantization.F32)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done (load, write, verify).")
    error = models.TextField(blank=True, help_text="Why the export failed (verification or writing).")
    storage_path = models.CharField(max_length=500, blank=True,
                                    help_text="Storage name of the zip (adapter, merged) or .gguf file.")
    size_bytes = models.PositiveBigIntegerField(default=0)
    verification = models.JSONField(default=dict, blank=True,
                                    help_text="Per-prompt comparison with the source model and the tolerance.")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id

    @property
    def artifact(self) -> str:
        """The ``artifact`` name the download endpoint serves it under (merged, gguf-f16, ...)."""
        return f"gguf-{self.quantization}" if self.kind == self.Kind.GGUF else self.kind

    @property
    def filename(self) -> str:
        stem = f"{self.model_id.replace(':', '_')}-{self.artifact}"
        return f"{stem}.gguf" if self.kind == self.Kind.GGUF else f"{stem}.zip"
