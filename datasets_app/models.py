from django.conf import settings
from django.db import models

from finetune_site.ids import new_id


def new_file_id() -> str:
    return new_id("file")


def dataset_upload_to(dataset: "Dataset", filename: str) -> str:
    return f"datasets/{dataset.id}/{filename}"


class Dataset(models.Model):
    """An uploaded training file; the API calls it a file (``file-…``)."""

    class Status(models.TextChoices):
        UPLOADED = "uploaded"
        VALIDATING = "validating"
        READY = "ready"
        INVALID = "invalid"

    class Format(models.TextChoices):
        CHAT = "chat"
        PROMPT_COMPLETION = "prompt_completion"

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    file = models.FileField(upload_to=dataset_upload_to, max_length=500)
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=40, default="fine-tune")
    format = models.CharField(max_length=40, choices=Format.choices, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED)
    row_count = models.PositiveIntegerField(default=0)
    byte_size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    validation_report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"
