from django.conf import settings
from django.db import models

from finetune_site.ids import new_id


def new_sweep_id() -> str:
    return new_id("sweep")


class Sweep(models.Model):
    """A search over a job's hyperparameters: trials (each a fine-tuning job) asked of Optuna's TPE
    sampler, up to ``max_trials``, ``parallelism`` of them unfinished at a time; a trial whose
    validation loss trails the others' at the same pass is pruned (its job cancelled)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # every trial ended, at least one with a value
        FAILED = "failed"  # every trial ended, none with a value
        CANCELLED = "cancelled"  # stopped by its owner: no new trials, unfinished jobs cancelled

    class Direction(models.TextChoices):
        MINIMIZE = "minimize"
        MAXIMIZE = "maximize"

    id = models.CharField(primary_key=True, max_length=40, default=new_sweep_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sweeps")
    project = models.ForeignKey("accounts_app.Project", on_delete=models.CASCADE, related_name="+")
    job_request = models.JSONField(help_text="The job body every trial starts from (model, files, method, suffix).")
    search_space = models.JSONField(help_text='{"<hyperparameter>": {"type": "loguniform", "low": .., "high": ..}}')
    metric = models.CharField(max_length=40, help_text="The objective: a job metric such as valid_loss, or a "
                              "metric of the evaluation after each trial such as accuracy.")
    direction = models.CharField(max_length=10, choices=Direction.choices, default=Direction.MINIMIZE)
    max_trials = models.PositiveIntegerField()
    parallelism = models.PositiveIntegerField(default=1)
    pruning = models.JSONField(default=dict, blank=True, help_text='{"type": "median", "startup_trials": 2, '
                               '"warmup_passes": 0}; {"type": "none"}: every trial trains to the end.')
    initial_points = models.JSONField(default=list, blank=True, help_text="Points tried first, in order, "
                                      "before TPE proposes (Optuna's enqueue_trial); a point may leave names out.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    reason = models.CharField(max_length=300, blank=True, help_text="Why it was cancelled, when not by its "
                              "owner (e.g. its owner left the project).")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.id


# The legal changes of Sweep.status (finetune_site.status): a running sweep ends once.
SWEEP_TRANSITIONS = {
    Sweep.Status.RUNNING: {Sweep.Status.SUCCEEDED, Sweep.Status.FAILED, Sweep.Status.CANCELLED},
    Sweep.Status.SUCCEEDED: set(), Sweep.Status.FAILED: set(), Sweep.Status.CANCELLED: set(),
}


class SweepTrial(models.Model):
    """One point of the search: the values Optuna asked for and the job that trains them."""

    class State(models.TextChoices):
        RUNNING = "running"  # its job has not ended
        COMPLETE = "complete"  # its job succeeded and has the objective
        FAILED = "failed"  # its job failed or was cancelled, or ended without the objective
        PRUNED = "pruned"  # its validation loss trailed the other trials': the sweep cancelled its job
        CANCELLED = "cancelled"  # the sweep was cancelled before its job ended

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    number = models.PositiveIntegerField(help_text="0, 1, 2, ... in the order asked.")
    params = models.JSONField(help_text="The sampled hyperparameters.")
    job = models.OneToOneField("jobs_app.FineTuneJob", on_delete=models.CASCADE, null=True, blank=True,
                               related_name="sweep_trial", help_text="Empty when the job could not be created.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    value = models.FloatField(null=True, blank=True, help_text="The objective metric of the finished job (or of "
                              "its evaluation).")
    note = models.CharField(max_length=300, blank=True, help_text="Why a trial has no value (failed, pruned).")

    class Meta:
        ordering = ["sweep", "number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="sweep_trial_number_unique")]

    def __str__(self) -> str:
        return f"{self.sweep_id}#{self.number}"
