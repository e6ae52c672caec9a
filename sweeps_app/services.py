"""Sweeps: a search over a job's hyperparameters, each trial a normal fine-tuning job.

Optuna's TPE sampler proposes the trials. Its study is not stored: it is rebuilt in memory from the
sweep's trials each time one is asked for (ask/tell), so the trials table is the one record. Trials
are not pruned early: each trains to the end and is scored by its final metric.
"""

import hashlib
import math

from django.db import transaction
from django.utils import timezone

from accounts_app.selectors import project_acting, user_in_project
from finetune_site.errors import Conflict, InvalidRequest
from jobs_app.models import FINISHED, FineTuneJob, JobEvent
from jobs_app.services import hyperparameters_param, job_create, job_request_check
from models_app.services.registry import model_promote
from sweeps_app.models import Sweep, SweepTrial
from workers.hyperparameters import BY_NAME, OBJECTIVES, Choice, Float, Int

# The job metrics a sweep can minimise or maximise (the last value the job logged); the valid_*
# ones need a validation file.
OBJECTIVE_METRICS = ("valid_loss", "full_valid_loss", "valid_mean_token_accuracy", "train_loss")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "categorical")
MAX_TRIALS, MAX_PARALLELISM = 100, 16
Status, State = Sweep.Status, SweepTrial.State


def sweep_create(*, owner, model: str, training_file: str, validation_file: str | None = None,
                 method: dict | None = None, suffix: str = "", search_space, objective, max_trials,
                 parallelism=1) -> Sweep:
    """Check the sweep (every problem a 400 naming its param, nothing stored) and start its first
    ``parallelism`` trials as jobs created through ``job_create``."""
    objective_type, fixed = _method_parts(method)
    space = search_space_check(search_space, objective=objective_type)
    metric, direction = objective_check(objective, has_validation=bool(validation_file))
    max_trials = _count_check(max_trials, "max_trials", MAX_TRIALS)
    parallelism = _count_check(parallelism, "parallelism", min(MAX_PARALLELISM, max_trials))
    request = {"model": model, "training_file": training_file, "validation_file": validation_file or None,
               "objective": objective_type, "hyperparameters": fixed, "suffix": suffix or ""}
    for point in _corners(space):  # every trial's job passes the same checks: the extremes of the space do
        _point_check(owner, request, point)
    with transaction.atomic():
        sweep = Sweep.objects.create(owner=owner, project=project_acting(owner), job_request=request,
                                     search_space=space, metric=metric,
                                     direction=direction, max_trials=max_trials, parallelism=parallelism)
        _trials_start(sweep)
    return sweep


def _point_check(owner, request: dict, point: dict) -> None:
    """The job checks at one point of the space; a hyperparameter the space sets is named there."""
    try:
        job_request_check(owner=owner, **{**request, "hyperparameters": {**request["hyperparameters"], **point}})
    except InvalidRequest as refused:
        name = (refused.param or "").removeprefix(hyperparameters_param(request["objective"]) + ".")
        if name in point:
            raise InvalidRequest(f"at {name}={point[name]!r}: {refused.message}", param=f"search_space.{name}",
                                 code=refused.code) from refused
        raise


def _method_parts(method) -> tuple[str, dict]:
    """(objective, fixed hyperparameters) from OpenAI's ``method`` body."""
    method = method or {"type": "supervised"}
    if not isinstance(method, dict) or method.get("type", "supervised") not in OBJECTIVES:
        raise InvalidRequest(f"method.type must be one of {', '.join(OBJECTIVES)}", param="method.type")
    kind = method.get("type", "supervised")
    hyperparameters = (method.get(kind) or {}).get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise InvalidRequest("method hyperparameters must be an object", param=f"method.{kind}.hyperparameters")
    return kind, dict(hyperparameters)


def search_space_check(space, *, objective: str) -> dict:
    """The search space, checked against the hyperparameters' spec (``workers.hyperparameters``): known
    names that apply to the objective, each with a non-empty range inside the option's own."""
    if not isinstance(space, dict) or not space:
        raise InvalidRequest('search_space must name at least one hyperparameter, e.g. {"learning_rate_multiplier": '
                             '{"type": "loguniform", "low": 0.1, "high": 10}}', param="search_space")
    return {name: _dimension_check(name, spec, objective) for name, spec in space.items()}


def _dimension_check(name: str, spec, objective: str) -> dict:
    param = f"search_space.{name}"
    option = BY_NAME.get(name)
    if option is None:
        raise InvalidRequest(f"{name!r} is not a hyperparameter; use one of {', '.join(BY_NAME)}", param=param,
                             code="invalid_search_space")
    if objective not in option.objectives:
        raise InvalidRequest(f"{name} does not apply to {objective}", param=param, code="invalid_search_space")
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in DISTRIBUTIONS:
        raise InvalidRequest(f"{param}.type must be one of {', '.join(DISTRIBUTIONS)}", param=param,
                             code="invalid_search_space")
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise InvalidRequest(f"{param}.values must be a non-empty list", param=param, code="invalid_search_space")
        for value in values:
            _value_check(option, value, param)
        return {"type": kind, "values": values}
    if not isinstance(option.kind, Int | Float) or (kind == "int" and not isinstance(option.kind, Int)):
        what = "categorical values" if isinstance(option.kind, Choice) else "a type that fits it"
        raise InvalidRequest(f"{name} takes no {kind} range; give {what}", param=param, code="invalid_search_space")
    low, high = spec.get("low"), spec.get("high")
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequest(f"{param} needs numbers low and high", param=param, code="invalid_search_space")
    if isinstance(option.kind, Int):  # an integer option samples integers
        low, high = int(low), int(high)
    for value in (low, high):
        _value_check(option, value, param)
    if not low < high:
        raise InvalidRequest(f"{param} is an empty range: low ({low}) must be below high ({high})", param=param,
                             code="invalid_search_space")
    if kind == "loguniform" and low <= 0:
        raise InvalidRequest(f"{param}: a loguniform range starts above 0", param=param, code="invalid_search_space")
    return {"type": kind, "low": low, "high": high}


def _value_check(option, value, param: str) -> None:
    problem = option.kind.problem(value)
    if problem:
        raise InvalidRequest(f"{param}: {problem}", param=param, code="invalid_search_space")


def objective_check(objective, *, has_validation: bool) -> tuple[str, str]:
    """(metric, direction) of the sweep's objective."""
    if not isinstance(objective, dict):
        raise InvalidRequest('objective must be {"metric": "valid_loss", "direction": "minimize"}', param="objective")
    metric, direction = objective.get("metric"), objective.get("direction", Sweep.Direction.MINIMIZE)
    if metric not in OBJECTIVE_METRICS:
        raise InvalidRequest(f"objective.metric must be one of {', '.join(OBJECTIVE_METRICS)} (a job's metric)",
                             param="objective.metric", code="invalid_objective")
    if metric.startswith(("valid", "full_valid")) and not has_validation:
        raise InvalidRequest(f"{metric} is measured on the validation file: give validation_file",
                             param="objective.metric", code="invalid_objective")
    if direction not in Sweep.Direction.values:
        raise InvalidRequest("objective.direction must be minimize or maximize", param="objective.direction")
    return metric, direction


def _count_check(value, param: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise InvalidRequest(f"{param} must be an integer from 1 to {most}", param=param)
    return value


def _corners(space: dict) -> list[dict]:
    """The lowest and the highest point of the space (categorical: first and last value)."""
    def end(spec: dict, last: bool):
        return spec["values"][-1 if last else 0] if spec["type"] == "categorical" else spec["high" if last else "low"]
    return [{name: end(spec, last) for name, spec in space.items()} for last in (False, True)]


def _trials_start(sweep: Sweep) -> None:
    """Ask for trials until ``parallelism`` run or ``max_trials`` were asked (caller holds the sweep)."""
    trials = list(sweep.trials.all())
    while sum(t.state == State.RUNNING for t in trials) < sweep.parallelism and len(trials) < sweep.max_trials:
        params = _ask(sweep, trials)
        number = len(trials)
        request = sweep.job_request
        try:
            job = job_create(owner=user_in_project(sweep.owner, sweep.project), model=request["model"],
                             training_file=request["training_file"],
                             validation_file=request["validation_file"], objective=request["objective"],
                             hyperparameters={**request["hyperparameters"], **params}, suffix=request["suffix"],
                             metadata={"sweep": sweep.id, "trial": str(number)})
        except InvalidRequest as refused:  # e.g. the file was deleted since: the trial fails, the sweep goes on
            trials.append(SweepTrial.objects.create(sweep=sweep, number=number, params=params, job=None,
                                                    state=State.FAILED, note=refused.message[:300]))
            continue
        trials.append(SweepTrial.objects.create(sweep=sweep, number=number, params=params, job=job))
    _sweep_finish_if_done(sweep, trials)


def _ask(sweep: Sweep, trials: list[SweepTrial]) -> dict:
    """The next point: Optuna's TPE over the trials so far (running ones as running, so parallel
    trials spread out), its study rebuilt from them."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {name: _distribution(spec) for name, spec in sweep.search_space.items()}
    seed = int.from_bytes(hashlib.sha256(f"{sweep.id}:{len(trials)}".encode()).digest()[:4], "big")
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                         n_startup_trials=max(2, min(10, sweep.max_trials // 4)))
    study = optuna.create_study(direction=sweep.direction, sampler=sampler)
    states = {State.COMPLETE: TrialState.COMPLETE, State.FAILED: TrialState.FAIL, State.RUNNING: TrialState.RUNNING}
    for trial in trials:
        study.add_trial(create_trial(params=trial.params, distributions=distributions, state=states[trial.state],
                                     value=trial.value if trial.state == State.COMPLETE else None))
    return study.ask(distributions).params


def _distribution(spec: dict):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec["type"] == "categorical":
        return CategoricalDistribution(spec["values"])
    if isinstance(spec["low"], int) and isinstance(spec["high"], int):
        return IntDistribution(spec["low"], spec["high"], log=spec["type"] == "loguniform")
    return FloatDistribution(spec["low"], spec["high"], log=spec["type"] == "loguniform")


def sweep_trial_finish(*, job_id: str) -> Sweep | None:
    """A trial's job ended: record its objective (or why it has none), then start the next trials or
    end the sweep. Safe to run twice for one job."""
    with transaction.atomic():
        sweep_id = SweepTrial.objects.filter(job_id=job_id).values_list("sweep_id", flat=True).first()
        if sweep_id is None:
            return None
        sweep = Sweep.objects.select_for_update().get(pk=sweep_id)  # one advance of a sweep at a time
        trial = SweepTrial.objects.select_related("job").get(job_id=job_id)
        if trial.state == State.RUNNING and trial.job.status in FINISHED:
            trial.state, trial.value, trial.note = _outcome(trial.job, sweep.metric)
            trial.save(update_fields=["state", "value", "note"])
        if sweep.status == Status.RUNNING:
            _trials_start(sweep)
    return sweep


def sweeps_catch_up() -> int:
    """Advance every running trial whose job has ended (the task its end queued was lost); returns
    how many. Run by celery beat."""
    ended = list(SweepTrial.objects.filter(state=State.RUNNING, job__status__in=FINISHED,
                                           sweep__status=Status.RUNNING).values_list("job_id", flat=True))
    for job_id in ended:
        sweep_trial_finish(job_id=job_id)
    return len(ended)


def _outcome(job: FineTuneJob, metric: str) -> tuple[str, float | None, str]:
    if job.status != FineTuneJob.Status.SUCCEEDED:
        return State.FAILED, None, f"the job {job.status}" + (f": {job.error['message']}"[:250] if job.error else "")
    last = (job.events.filter(type=JobEvent.Type.METRICS, data__has_key=metric).order_by("-seq")
            .values_list("data", flat=True).first())
    value = (last or {}).get(metric)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return State.FAILED, None, f"the job logged no {metric}"
    return State.COMPLETE, float(value), ""


def _sweep_finish_if_done(sweep: Sweep, trials: list[SweepTrial]) -> None:
    """The one writer of ``Sweep.status``: it ends once every trial it may ask for has ended."""
    if sweep.status != Status.RUNNING or len(trials) < sweep.max_trials:
        return
    if any(t.state == State.RUNNING for t in trials):
        return
    sweep.status = Status.SUCCEEDED if any(t.state == State.COMPLETE for t in trials) else Status.FAILED
    sweep.finished_at = timezone.now()
    sweep.save(update_fields=["status", "finished_at"])


def sweep_best_trial(sweep: Sweep) -> SweepTrial | None:
    """The complete trial with the best objective (the first of equals), or None."""
    complete = [t for t in sweep.trials.all() if t.state == State.COMPLETE]
    sign = 1 if sweep.direction == Sweep.Direction.MINIMIZE else -1
    return min(complete, key=lambda t: (sign * t.value, t.number), default=None)


def sweep_promote_best(*, sweep: Sweep, alias: str = "production"):
    """Point ``alias`` at the model version of the sweep's best trial (the registry's promote)."""
    best = sweep_best_trial(sweep)
    if best is None:
        raise Conflict(f"{sweep.id} has no complete trial yet to promote", param="sweep_id", code="no_best_trial")
    model = getattr(best.job, "result_model", None)
    if model is None:
        raise Conflict(f"trial {best.number} ({best.job_id}) made no model version", param="sweep_id")
    return model_promote(model=model, alias=alias)
