"""Running a pipeline: a run's steps start when their needs succeeded, each making a normal dataset
version, job, evaluation or export (or reusing an earlier step's with the same key, like a build cache).
``pipeline_advance`` moves a run on; it is queued when a step's object ends (``pipelines_app.receivers``).
Only this module writes ``PipelineStep.status`` and ``PipelineRun.status``."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from accounts_app.selectors import project_acting, user_in_project
from finetune_site.api_errors import first_error
from finetune_site.errors import InvalidRequest
from finetune_site.status import status_transition
from pipelines_app import tasks
from pipelines_app.models import RUN_TRANSITIONS, STEP_TRANSITIONS, Pipeline, PipelineRun, PipelineStep
from pipelines_app.services.recipe import REF, recipe_check, recipe_inputs_check
from pipelines_app.services.steps import STEP_KINDS, Outcome

Status = PipelineStep.Status


def pipeline_create(*, owner, recipe) -> Pipeline:
    """Check the recipe whole (a 400 names the bad field, nothing stored), store it and start its first run."""
    checked = recipe_check(owner=owner, recipe=recipe)
    with transaction.atomic():
        pipeline = Pipeline.objects.create(owner=owner, project=project_acting(owner), name=checked["name"],
                                           recipe=checked)
        pipeline_run_create(pipeline=pipeline, inputs=checked["inputs"])
    return pipeline


def pipeline_run_create(*, pipeline: Pipeline, inputs: dict | None = None) -> PipelineRun:
    """Run ``pipeline`` on ``inputs`` (file ids by input name; missing names keep the recipe's): each step's
    key is its settings and its inputs' keys hashed, so unchanged steps reuse what an earlier run made."""
    inputs = {**pipeline.recipe["inputs"], **(inputs or {})}
    unknown = sorted(set(inputs) - set(pipeline.recipe["inputs"]))
    if unknown:
        raise InvalidRequest(f"the recipe has no input {unknown[0]!r}", param=f"inputs.{unknown[0]}")
    datasets = recipe_inputs_check(owner=user_in_project(pipeline.owner, pipeline.project), inputs=inputs)
    keys = {f"inputs.{name}": dataset.sha256 for name, dataset in datasets.items()}
    with transaction.atomic():
        run = PipelineRun.objects.create(pipeline=pipeline, inputs=inputs)
        for position, step in enumerate(pipeline.recipe["steps"]):
            keys[step["id"]] = _step_key(step, keys)
            PipelineStep.objects.create(run=run, step_id=step["id"], type=step["type"], position=position,
                                        needs=step["needs"], key=keys[step["id"]])
        transaction.on_commit(lambda: tasks.pipeline_advance.delay(run.id))
    return run


def _step_key(step: dict, keys: dict) -> str:
    """sha256 of the step's type and settings and of the keys of what it reads and needs."""
    reads = sorted({keys[f"inputs.{m['input']}"] if m["input"] else keys[m["step"]]
                    for value in step["settings"].values() if isinstance(value, str) and (m := REF.match(value))})
    body = {"type": step["type"], "settings": step["settings"], "reads": reads,
            "needs": sorted(keys[need] for need in step["needs"])}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def pipeline_advance(*, run_id: str) -> PipelineRun | None:
    """Move a run on: settle running steps whose object ended, retry transient failures after their backoff,
    skip the dependants of failed steps, start steps whose needs succeeded; end the run when all are done."""
    with transaction.atomic():
        run = PipelineRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != PipelineRun.Status.RUNNING:
            return run
        steps = {s.step_id: s for s in run.steps.all()}
        changed = True
        while changed:  # a step that ends at once (a small prepare, a reused step) lets the next start
            changed = False
            for step in sorted(steps.values(), key=lambda s: s.position):
                if step.is_finished:
                    continue
                before = step.status
                steps[step.step_id] = step = _step_advance(run, step, steps)
                changed |= step.status != before and step.is_finished
        if all(s.is_finished for s in steps.values()):
            ok = all(s.status == Status.SUCCEEDED for s in steps.values())
            run = status_transition(PipelineRun, run.id, PipelineRun.Status.SUCCEEDED if ok else
                                    PipelineRun.Status.FAILED, rules=RUN_TRANSITIONS, finished_at=timezone.now())
    return run


def _step_advance(run: PipelineRun, step: PipelineStep, steps: dict) -> PipelineStep:
    if step.status == Status.RUNNING:
        return _step_settle(run, step, steps)
    if step.status == Status.RETRYING:
        return _step_start(run, step, steps) if step.retry_at <= timezone.now() else step
    needs = [steps[n] for n in step.needs]
    failed = next((n for n in needs if n.status in (Status.FAILED, Status.SKIPPED)), None)
    if failed is not None:
        why = failed.error if failed.status == Status.FAILED else failed.reason
        return _step_to(step, Status.SKIPPED, reason=f"step {failed.step_id!r} {failed.status}: {why}",
                        finished_at=timezone.now())
    if not all(n.status == Status.SUCCEEDED for n in needs):
        return step
    earlier = _step_reusable(run, step)
    if earlier is not None:
        return _step_to(step, Status.SUCCEEDED, object_id=earlier.object_id, outputs=earlier.outputs,
                        reused_from=earlier, started_at=timezone.now(), finished_at=timezone.now())
    return _step_start(run, step, steps)


def _step_reusable(run: PipelineRun, step: PipelineStep) -> PipelineStep | None:
    """The newest succeeded step of the project's runs with the same key whose objects still exist."""
    earlier = (PipelineStep.objects.filter(run__pipeline__project_id=run.pipeline.project_id, key=step.key,
                                           status=Status.SUCCEEDED).exclude(run=run).order_by("-finished_at"))
    kind = STEP_KINDS[step.type]
    return next((e for e in earlier[:5] if kind.outputs_exist(e.outputs)), None)


def _step_start(run: PipelineRun, step: PipelineStep, steps: dict) -> PipelineStep:
    """Make the step's object from its settings, references replaced by the outputs they name."""
    settings_ = _resolved(run, step, steps)
    attempt = step.attempts + 1
    try:
        with transaction.atomic():  # a refused start rolls back alone; the run goes on
            outputs = STEP_KINDS[step.type].start(owner=user_in_project(run.pipeline.owner, run.pipeline.project),
                                                  settings=settings_)
    except (InvalidRequest, ValidationError) as exc:
        message = exc.message if isinstance(exc, InvalidRequest) else first_error(exc.detail)[1]
        return _step_to(step, Status.FAILED, attempts=attempt, error=message, started_at=timezone.now(),
                        finished_at=timezone.now())
    step = _step_to(step, Status.RUNNING, attempts=attempt, object_id=next(iter(outputs.values())), outputs=outputs,
                    error="", retry_at=None, started_at=step.started_at or timezone.now())
    return _step_settle(run, step, steps)


def _resolved(run: PipelineRun, step: PipelineStep, steps: dict) -> dict:
    recipe_step = next(s for s in run.pipeline.recipe["steps"] if s["id"] == step.step_id)
    resolved = {}
    for key, value in recipe_step["settings"].items():
        match = REF.match(value) if isinstance(value, str) else None
        if match is None:
            resolved[key] = value
        elif match["input"]:
            resolved[key] = run.inputs[match["input"]]
        else:
            resolved[key] = steps[match["step"]].outputs[match["output"]]
    return resolved


def _step_settle(run: PipelineRun, step: PipelineStep, steps: dict) -> PipelineStep:
    """Read the step's object: still going, done (its outputs recorded), or failed (retried when transient)."""
    recipe_step = next(s for s in run.pipeline.recipe["steps"] if s["id"] == step.step_id)
    outcome: Outcome = STEP_KINDS[step.type].outcome(step.outputs, recipe_step["settings"])
    if outcome.status == "running":
        return step
    if outcome.status == "succeeded":
        return _step_to(step, Status.SUCCEEDED, outputs=outcome.outputs, finished_at=timezone.now())
    if outcome.transient and step.attempts < settings.PIPELINE_STEP_MAX_ATTEMPTS:
        delay = settings.PIPELINE_RETRY_BASE_SECONDS * 2 ** (step.attempts - 1)
        transaction.on_commit(lambda: tasks.pipeline_advance.apply_async((run.id,), countdown=delay))
        return _step_to(step, Status.RETRYING, error=f"attempt {step.attempts} failed: {outcome.error}; retrying "
                                                     f"in {delay:g}s", retry_at=timezone.now() + timedelta(
                                                         seconds=delay))
    return _step_to(step, Status.FAILED, error=outcome.error, finished_at=timezone.now())


def _step_to(step: PipelineStep, to: str, **fields) -> PipelineStep:
    return status_transition(PipelineStep, step.pk, to, rules=STEP_TRANSITIONS, **fields)


def pipeline_runs_waiting_on(object_id: str) -> list[str]:
    """The runs with a step waiting on ``object_id`` (a dataset version, job, evaluation or export)."""
    waiting = PipelineStep.objects.filter(Q(object_id=object_id) | Q(outputs__validation=object_id),
                                          status=Status.RUNNING)
    return list(waiting.values_list("run_id", flat=True).distinct())
