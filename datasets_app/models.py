from django.conf import settings
from django.db import models

from finetune_site.ids import new_id
from workers.formats import TRAINING_FORMAT

# The purpose of files the platform writes for a user (a job's step metrics): never training data.
RESULTS_PURPOSE = "fine-tune-results"
# The purpose of an archive of labelled images (class folders, or a labels file): checked by workers.images.
VISION_PURPOSE = "vision"


def new_file_id() -> str:
    return new_id("file")


def new_upload_id() -> str:
    return new_id("upload")


def dataset_upload_to(dataset: "Dataset", filename: str) -> str:
    return f"datasets/{dataset.id}/{filename}"


def dataset_training_upload_to(dataset: "Dataset", filename: str) -> str:
    return f"datasets/{dataset.id}/normalised/{filename}"


class Dataset(models.Model):
    """An uploaded training file; the API calls it a file (``file-…``).

    ``file`` is what the user uploaded, never modified. ``training_file`` is the normalised JSONL
    the trainer reads when the upload was not already one (CSV, Parquet, Alpaca, a mapping, ...).
    A prepared version points at its ``parent`` and lists the ``operations`` that made it.
    """

    class Status(models.TextChoices):
        UPLOADED = "uploaded"
        VALIDATING = "validating"
        READY = "ready"
        INVALID = "invalid"

    class QualityStatus(models.TextChoices):
        NONE = "", "not computed"
        COMPUTING = "computing"
        READY = "ready"
        FAILED = "failed"

    class Format(models.TextChoices):
        CHAT = "chat"
        ALPACA = "alpaca"
        PROMPT_COMPLETION = "prompt_completion"
        TEXT = "text"
        PREFERENCE = "preference"
        UNPAIRED_PREFERENCE = "unpaired_preference"
        PROMPT_ONLY = "prompt_only"
        IMAGE_CLASSIFICATION = "image_classification"

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    file = models.FileField(upload_to=dataset_upload_to, max_length=500)
    training_file = models.FileField(upload_to=dataset_training_upload_to, max_length=500, blank=True)
    filename = models.CharField(max_length=255)
    name = models.CharField(max_length=200, blank=True, help_text="The owner's name for it; the filename if blank.")
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True, help_text="Short labels to find it by (datasets_app.catalog).")
    purpose = models.CharField(max_length=40, default="fine-tune")
    options = models.JSONField(default=dict, blank=True, help_text="container, format and column_map as asked.")
    container = models.CharField(max_length=20, blank=True)
    format = models.CharField(max_length=40, choices=Format.choices, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED)
    progress = models.FloatField(default=0.0, help_text="Share of the file validated, 0..1.")
    row_count = models.PositiveIntegerField(default=0)
    byte_size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, db_index=True)
    duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                     help_text="An earlier dataset of the same owner with the same bytes.")
    validation_report = models.JSONField(default=dict, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    quality = models.JSONField(default=dict, blank=True,
                               help_text="Duplicates, near-duplicates, PII, overlap, empty turns, long rows.")
    quality_status = models.CharField(max_length=20, choices=QualityStatus.choices, blank=True, default="")
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="versions")
    operations = models.JSONField(default=list, blank=True, help_text="What made this version from its parent.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"]), models.Index(fields=["project", "sha256"])]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"

    @property
    def display_name(self) -> str:
        return self.name or self.filename

    @property
    def training_format(self) -> str:
        """What the trainer reads: Alpaca rows are normalised to chat; "" for rows that need an objective of
        their own (preference pairs, marked answers, prompts)."""
        return TRAINING_FORMAT.get(self.format, "")

    @property
    def training_file_name(self) -> str:
        """The stored file the trainer reads."""
        return self.training_file.name or self.file.name

    @property
    def is_vision(self) -> bool:
        return self.purpose == VISION_PURPOSE

    @property
    def is_final(self) -> bool:
        return self.status in (self.Status.READY, self.Status.INVALID)


# The legal status changes; only datasets_app.services writes Dataset.status, through this table.
DATASET_TRANSITIONS: dict[str, set[str]] = {
    Dataset.Status.UPLOADED: {Dataset.Status.VALIDATING, Dataset.Status.INVALID},
    # validating → validating: a worker that died mid-check is replaced (the task is acked late)
    Dataset.Status.VALIDATING: {Dataset.Status.VALIDATING, Dataset.Status.READY, Dataset.Status.INVALID},
    Dataset.Status.READY: set(),
    # invalid → uploaded: checked again with other options (a column mapping, a format)
    Dataset.Status.INVALID: {Dataset.Status.UPLOADED},
}


# The quality report's states; only datasets_app.services.quality writes quality_status.
QUALITY_TRANSITIONS: dict[str, set[str]] = {
    Dataset.QualityStatus.NONE: {Dataset.QualityStatus.COMPUTING},
    # computing → computing: asked again with other options while a check runs (the newest wins)
    Dataset.QualityStatus.COMPUTING: {Dataset.QualityStatus.COMPUTING, Dataset.QualityStatus.READY,
                                      Dataset.QualityStatus.FAILED},
    Dataset.QualityStatus.READY: {Dataset.QualityStatus.COMPUTING},
    Dataset.QualityStatus.FAILED: {Dataset.QualityStatus.COMPUTING},
}


class DatasetUpload(models.Model):
    """A resumable upload in progress: chunks are appended at ``received`` until it completes.

    The sha256 is computed on the way in: ``hash_state`` is saved with ``received`` in the same
    row update, so a chunk sent to another web process (or after a restart) goes on hashing.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    id = models.CharField(primary_key=True, max_length=40, default=new_upload_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataset_uploads")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=40, default="fine-tune")
    options = models.JSONField(default=dict, blank=True)
    expected_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    expected_sha256 = models.CharField(max_length=64, blank=True)
    received = models.PositiveBigIntegerField(default=0)
    hash_state = models.BinaryField(default=b"", blank=True,
                                    help_text="The sha256 of the first ``received`` bytes, mid-computation "
                                              "(rehashes' serialized state): the next chunk, in any process, "
                                              "continues it.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    dataset = models.ForeignKey(Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id})"


# Only datasets_app.services.uploads writes DatasetUpload.status.
UPLOAD_TRANSITIONS: dict[str, set[str]] = {
    DatasetUpload.Status.OPEN: {DatasetUpload.Status.COMPLETED, DatasetUpload.Status.CANCELLED},
    DatasetUpload.Status.COMPLETED: set(),
    DatasetUpload.Status.CANCELLED: set(),
}


class TokenStats(models.Model):
    """Per-row token counts of a dataset's content under one tokenizer and template, computed once.

    Keyed by the owner, the uploaded bytes' sha256 and the reading options (which decide the rows),
    so the owner's second dataset or job on the same data does not tokenize again.
    """

    class Status(models.TextChoices):
        COMPUTING = "computing"
        READY = "ready"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sha256 = models.CharField(max_length=64)
    options_key = models.CharField(max_length=64, help_text="sha256 of the reading options' JSON.")
    tokenizer = models.CharField(max_length=500, help_text="The base model's source (path or hub id).")
    template = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.COMPUTING)
    rows = models.PositiveIntegerField(default=0)
    stride = models.PositiveIntegerField(default=1, help_text="Every stride-th row was examined.")
    sampled = models.BooleanField(default=False)
    totals = models.JSONField(default=list, blank=True)
    targets = models.JSONField(default=list, blank=True)
    structure = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "token statistics"
        constraints = [models.UniqueConstraint(fields=["owner", "sha256", "options_key", "tokenizer", "template"],
                                               name="token_stats_owner_key_unique")]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} {self.tokenizer} {self.template or 'own template'}"


# Only datasets_app.services.stats writes TokenStats.status.
TOKEN_STATS_TRANSITIONS: dict[str, set[str]] = {
    # computing → computing: a computation lost with its worker is asked for again
    TokenStats.Status.COMPUTING: {TokenStats.Status.COMPUTING, TokenStats.Status.READY, TokenStats.Status.FAILED},
    TokenStats.Status.FAILED: {TokenStats.Status.COMPUTING},
    TokenStats.Status.READY: set(),
}
