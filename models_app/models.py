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
