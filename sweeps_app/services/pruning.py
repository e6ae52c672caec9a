"""Early pruning: a trial whose validation loss trails the complete trials' at the same pass is
stopped (its job cancelled, "pruned by sweep") so the sweep's budget goes to the next trial."""

import math
import statistics

from django.db import transaction

from finetune_site.errors import Conflict
from jobs_app.models import FineTuneJob
from jobs_app.services import job_cancel
from sweeps_app.models import Sweep, SweepTrial
from sweeps_app.services.trials import sweep_study, trials_start, validation_losses

Status, State = Sweep.Status, SweepTrial.State


def sweep_trial_report(*, job_id: str, step: int, total_steps: int) -> bool:
    """A trial's job stored a validation pass: ask the sweep's pruner (Optuna's median pruner over
    the validation losses by pass) whether to stop it. If so the trial is pruned, its job cancelled
    with the reason, and the next trial starts. Returns whether it was pruned.

    A pass at the last step is never pruned: the trial has nothing left to save.
    """
    if step >= total_steps or not SweepTrial.objects.filter(
            job_id=job_id, state=State.RUNNING, sweep__status=Status.RUNNING, sweep__pruning__type="median").exists():
        return False
    try:
        with transaction.atomic():
            return _prune_if_trailing(job_id)
    except Conflict:
        return False  # the job ended meanwhile: its end scores the trial


def _prune_if_trailing(job_id: str) -> bool:
    sweep_id = SweepTrial.objects.filter(job_id=job_id).values_list("sweep_id", flat=True).get()
    sweep = Sweep.objects.select_for_update().get(pk=sweep_id)  # one advance of a sweep at a time
    trials = list(sweep.trials.select_related("job").order_by("number"))
    trial = next(t for t in trials if t.job_id == job_id)
    if sweep.status != Status.RUNNING or trial.state != State.RUNNING or trial.job.status != FineTuneJob.Status.RUNNING:
        return False
    reason = sweep_prune_reason(sweep, trials, trial, validation_losses(trials))
    if reason is None:
        return False
    trial.state, trial.note = State.PRUNED, f"pruned by sweep: {reason}"[:300]
    trial.save(update_fields=["state", "note"])
    job_cancel(job=trial.job, reason=f"pruned by sweep {sweep.id}: {reason}")
    trials_start(sweep)
    return True


def sweep_prune_reason(sweep: Sweep, trials: list[SweepTrial], trial: SweepTrial,
                       losses: dict[str, dict[int, float]]) -> str | None:
    """Why ``trial`` should stop now, or None: Optuna's ``MedianPruner`` asked about its validation
    losses so far against the complete trials' at the same pass (lower is better whatever the
    objective, so the study minimises)."""
    import optuna

    settings = sweep.pruning
    pruner = optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"],
                                         # passes count from 1: the first warmup_passes are never pruned
                                         n_warmup_steps=settings["warmup_passes"] + 1, n_min_trials=1)
    study = sweep_study(sweep, trials, pruner=pruner, losses=losses, direction="minimize")
    frozen = study.trials[trials.index(trial)]
    if frozen.last_step is None or not pruner.prune(study, frozen):
        return None
    step = frozen.last_step
    others = [losses[t.job_id][step] for t in trials
              if t.state == State.COMPLETE and step in losses.get(t.job_id, {})]
    best = min(frozen.intermediate_values.values())
    if not others or math.isnan(best):
        return f"its valid_loss is not a number by validation pass {step}"
    return (f"its best valid_loss {best:.4g} by validation pass {step} is worse than the median "
            f"{statistics.median(others):.4g} of {len(others)} complete trial(s) at that pass")
