from django.conf import settings
from django.db import models

from finetune_site.ids import new_id


def new_pipeline_id() -> str:
    return new_id("pipe")


def new_run_id() -> str:
    return new_id("piperun")


class Pipeline(models.Model):
    """A declarative recipe (``pipelines_app.services.recipe``), checked whole when it was stored."""

    id = models.CharField(primary_key=True, max_length=40, default=new_pipeline_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pipelines")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, blank=True)
    recipe = models.JSONField(help_text="The checked recipe: inputs and steps, each with its needs.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.id


class PipelineRun(models.Model):
    """One execution of a pipeline on its inputs; its steps advance as their objects end."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=40, default=new_run_id, editable=False)
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="runs")
    inputs = models.JSONField(default=dict, help_text="Input name → file id, e.g. {\"dataset\": \"file-…\"}.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.id


class PipelineStep(models.Model):
    """A step of a run: the dataset version, job, evaluation or export it made (or reused)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        RETRYING = "retrying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    step_id = models.CharField(max_length=64, help_text="The step's id in the recipe.")
    type = models.CharField(max_length=20)
    position = models.PositiveIntegerField(help_text="Where the step sits in the recipe's list.")
    needs = models.JSONField(default=list)
    key = models.CharField(max_length=64, db_index=True,
                           help_text="sha256 of the step's settings and its inputs' keys: equal keys, equal result.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    object_id = models.CharField(max_length=64, blank=True, db_index=True,
                                 help_text="The dataset, job, evaluation or export this attempt made.")
    outputs = models.JSONField(default=dict, blank=True, help_text="Output name → id, e.g. {\"model\": \"ft:…\"}.")
    reused_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                    help_text="The earlier step whose objects this one reuses (same key).")
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    reason = models.TextField(blank=True, help_text="Why the step was skipped.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "step_id"], name="pipeline_step_unique_id")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.step_id}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


FINISHED = {PipelineStep.Status.SUCCEEDED, PipelineStep.Status.FAILED, PipelineStep.Status.SKIPPED}

# Only pipelines_app.services.running writes PipelineStep.status and PipelineRun.status.
STEP_TRANSITIONS: dict[str, set[str]] = {
    PipelineStep.Status.PENDING: {PipelineStep.Status.RUNNING, PipelineStep.Status.SUCCEEDED,
                                  PipelineStep.Status.FAILED, PipelineStep.Status.SKIPPED},
    PipelineStep.Status.RUNNING: {PipelineStep.Status.SUCCEEDED, PipelineStep.Status.FAILED,
                                  PipelineStep.Status.RETRYING},
    PipelineStep.Status.RETRYING: {PipelineStep.Status.RUNNING, PipelineStep.Status.FAILED},
    PipelineStep.Status.SUCCEEDED: set(),
    PipelineStep.Status.FAILED: set(),
    PipelineStep.Status.SKIPPED: set(),
}
RUN_TRANSITIONS: dict[str, set[str]] = {
    PipelineRun.Status.RUNNING: {PipelineRun.Status.SUCCEEDED, PipelineRun.Status.FAILED},
    PipelineRun.Status.SUCCEEDED: set(),
    PipelineRun.Status.FAILED: set(),
}
