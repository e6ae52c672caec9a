"""Checking and starting a sweep: every problem a 400 naming its param, nothing stored."""

import math

from django.db import transaction

from accounts_app.selectors import project_acting
from finetune_site.errors import InvalidRequest
from jobs_app.services import hyperparameters_param, job_request_check
from sweeps_app.models import Sweep
from sweeps_app.services.trials import JOB_METRICS, trials_start
from workers.evaluation import LOWER_IS_BETTER
from workers.evaluation import METRICS as EVALUATION_METRICS
from workers.hyperparameters import BY_NAME, OBJECTIVES, Choice, Float, Int

# A sweep minimises or maximises a job metric (the last value the job logged; the valid_* ones need a
# validation file) or a metric of the evaluation each trial's model gets on the validation file when
# its job ends (models_app's evaluation: eval_loss, perplexity, accuracy, exact_match, bleu, rouge*).
OBJECTIVE_METRICS = JOB_METRICS + tuple(m for m in EVALUATION_METRICS if m not in JOB_METRICS)
LOWER_IS_BETTER_METRICS = {"valid_loss", "full_valid_loss", "train_loss", *LOWER_IS_BETTER}
DISTRIBUTIONS = ("uniform", "loguniform", "int", "categorical")
PRUNERS = ("median", "none")
MAX_TRIALS, MAX_PARALLELISM = 100, 16
DEFAULT_PRUNING = {"type": "median", "startup_trials": 2, "warmup_passes": 0}


def sweep_create(*, owner, model: str, training_file: str, validation_file: str | None = None,
                 method: dict | None = None, suffix: str = "", search_space, objective, max_trials,
                 parallelism=1, pruning=None, initial_points=None) -> Sweep:
    """Check the sweep (every problem a 400 naming its param, nothing stored) and start its first
    ``parallelism`` trials as jobs created through ``job_create``."""
    objective_type, fixed = _method_parts(method)
    space = search_space_check(search_space, objective=objective_type)
    metric, direction = objective_check(objective, has_validation=bool(validation_file))
    max_trials = _count_check(max_trials, "max_trials", MAX_TRIALS)
    parallelism = _count_check(parallelism, "parallelism", min(MAX_PARALLELISM, max_trials))
    pruning = pruning_check(pruning, has_validation=bool(validation_file))
    points = initial_points_check(initial_points, space=space, max_trials=max_trials)
    request = {"model": model, "training_file": training_file, "validation_file": validation_file or None,
               "objective": objective_type, "hyperparameters": fixed, "suffix": suffix or ""}
    lowest, highest = _corners(space)
    for point in [lowest, highest]:  # every trial's job passes the same checks: the extremes of the space do
        _point_check(owner, request, point)
    for index, point in enumerate(points):
        _point_check(owner, request, {**lowest, **point}, param=f"initial_points.{index}")
    with transaction.atomic():
        sweep = Sweep.objects.create(owner=owner, project=project_acting(owner), job_request=request,
                                     search_space=space, metric=metric,
                                     direction=direction, max_trials=max_trials, parallelism=parallelism,
                                     pruning=pruning, initial_points=points)
        trials_start(sweep)
    return sweep


def _point_check(owner, request: dict, point: dict, param: str = "search_space") -> None:
    """The job checks at one point of the space; a hyperparameter the space sets is named there."""
    try:
        job_request_check(owner=owner, **{**request, "hyperparameters": {**request["hyperparameters"], **point}})
    except InvalidRequest as refused:
        name = (refused.param or "").removeprefix(hyperparameters_param(request["objective"]) + ".")
        if name in point:
            raise InvalidRequest(f"at {name}={point[name]!r}: {refused.message}", param=f"{param}.{name}",
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
        if not _is_number(value):
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


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _value_check(option, value, param: str) -> None:
    problem = option.kind.problem(value)
    if problem:
        raise InvalidRequest(f"{param}: {problem}", param=param, code="invalid_search_space")


def objective_check(objective, *, has_validation: bool) -> tuple[str, str]:
    """(metric, direction) of the sweep's objective; the direction defaults to the metric's better way."""
    if not isinstance(objective, dict):
        raise InvalidRequest('objective must be {"metric": "valid_loss", "direction": "minimize"}', param="objective")
    metric = objective.get("metric")
    if metric not in OBJECTIVE_METRICS:
        raise InvalidRequest(f"objective.metric must be one of {', '.join(JOB_METRICS)} (a job's metric) or "
                             f"{', '.join(OBJECTIVE_METRICS[len(JOB_METRICS):])} (measured by the evaluation "
                             "after each trial)", param="objective.metric", code="invalid_objective")
    if metric != "train_loss" and not has_validation:
        where = "the validation file" if metric in JOB_METRICS else "the evaluation of the validation file"
        raise InvalidRequest(f"{metric} is measured on {where}: give validation_file", param="objective.metric",
                             code="invalid_objective")
    better = Sweep.Direction.MINIMIZE if metric in LOWER_IS_BETTER_METRICS else Sweep.Direction.MAXIMIZE
    direction = objective.get("direction", better)
    if direction not in Sweep.Direction.values:
        raise InvalidRequest("objective.direction must be minimize or maximize", param="objective.direction")
    return metric, direction


def pruning_check(pruning, *, has_validation: bool) -> dict:
    """The pruner: by default a median pruner when there is a validation file (it reads the validation
    loss of each pass), none without one."""
    if pruning is None:
        return dict(DEFAULT_PRUNING) if has_validation else {"type": "none"}
    if not isinstance(pruning, dict) or pruning.get("type") not in PRUNERS:
        raise InvalidRequest(f"pruning.type must be one of {', '.join(PRUNERS)}", param="pruning.type")
    if pruning["type"] == "none":
        return {"type": "none"}
    if not has_validation:
        raise InvalidRequest("pruning compares the validation loss of each pass: give validation_file, or "
                             'pruning {"type": "none"}', param="pruning.type")
    unknown = sorted(set(pruning) - {"type", *DEFAULT_PRUNING})
    if unknown:
        raise InvalidRequest(f"pruning has unknown key {unknown[0]!r}; known: type, {', '.join(DEFAULT_PRUNING)}",
                             param="pruning")
    settings = {**DEFAULT_PRUNING, **pruning}
    for name, least in (("startup_trials", 1), ("warmup_passes", 0)):
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= 1000:
            raise InvalidRequest(f"pruning.{name} must be an integer from {least} to 1000", param=f"pruning.{name}")
    return {name: settings[name] for name in DEFAULT_PRUNING}


def initial_points_check(points, *, space: dict, max_trials: int) -> list[dict]:
    """Points tried first (each may leave names out: TPE samples them); every value inside its range."""
    if points is None:
        return []
    if not isinstance(points, list) or len(points) > max_trials:
        raise InvalidRequest(f"initial_points must be a list of at most max_trials ({max_trials}) points",
                             param="initial_points")
    for index, point in enumerate(points):
        if not isinstance(point, dict) or not point:
            raise InvalidRequest('each initial point is an object such as {"learning_rate_multiplier": 1}',
                                 param=f"initial_points.{index}")
        for name, value in point.items():
            _point_value_check(space.get(name), name, value, f"initial_points.{index}.{name}")
    return points


def _point_value_check(spec: dict | None, name: str, value, param: str) -> None:
    if spec is None:
        raise InvalidRequest(f"{name} is not in the search space", param=param)
    if spec["type"] == "categorical":
        inside = value in spec["values"]
    elif spec["type"] == "int" or (isinstance(spec["low"], int) and isinstance(spec["high"], int)):
        inside = isinstance(value, int) and not isinstance(value, bool) and spec["low"] <= value <= spec["high"]
    else:
        inside = _is_number(value) and spec["low"] <= value <= spec["high"]
    if not inside:
        where = spec["values"] if spec["type"] == "categorical" else f"{spec['low']}..{spec['high']}"
        raise InvalidRequest(f"{name}={value!r} is outside the search space ({where})", param=param)


def _count_check(value, param: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise InvalidRequest(f"{param} must be an integer from 1 to {most}", param=param)
    return value


def _corners(space: dict) -> list[dict]:
    """The lowest and the highest point of the space (categorical: first and last value)."""
    def end(spec: dict, last: bool):
        return spec["values"][-1 if last else 0] if spec["type"] == "categorical" else spec["high" if last else "low"]
    return [{name: end(spec, last) for name, spec in space.items()} for last in (False, True)]
