"""Writes for pipelines, one module per topic. Only ``running`` writes a run's or a step's status.

- ``recipe``: checking a recipe whole (inputs, steps, references, order, each type's options)
- ``steps``: what each step type makes (a dataset version, a job, an evaluation, an export) and how it ends
- ``running``: creating a pipeline and its runs, and advancing a run as its steps' objects end
"""

from pipelines_app.services.recipe import recipe_check
from pipelines_app.services.running import (
    pipeline_advance,
    pipeline_create,
    pipeline_run_create,
    pipeline_runs_waiting_on,
)

__all__ = ["pipeline_advance", "pipeline_create", "pipeline_run_create", "pipeline_runs_waiting_on", "recipe_check"]
