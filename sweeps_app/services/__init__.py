"""Sweeps: a search over a job's hyperparameters, each trial a normal fine-tuning job.

- ``creation``: checking a sweep (space, objective, pruning, initial points) and starting it
- ``trials``: asking Optuna's TPE for trials, scoring them when their job or its evaluation ends,
  cancelling a sweep, promoting its best trial
- ``pruning``: stopping a trial whose validation loss trails the others' (Optuna's median pruner)
"""

from sweeps_app.services.creation import (
    OBJECTIVE_METRICS,
    initial_points_check,
    objective_check,
    pruning_check,
    search_space_check,
    sweep_create,
)
from sweeps_app.services.pruning import sweep_prune_reason, sweep_trial_report
from sweeps_app.services.trials import (
    sweep_actions,
    sweep_best_trial,
    sweep_cancel,
    sweep_promote_best,
    sweep_study,
    sweep_trial_finish,
    sweeps_catch_up,
    validation_losses,
)

__all__ = [
    "OBJECTIVE_METRICS", "initial_points_check", "objective_check", "pruning_check", "search_space_check",
    "sweep_actions", "sweep_best_trial", "sweep_cancel", "sweep_create", "sweep_promote_best", "sweep_prune_reason",
    "sweep_study", "sweep_trial_finish", "sweep_trial_report", "sweeps_catch_up", "validation_losses",
]
