"""A pipeline's recipe, checked whole before anything runs: its inputs, its steps and their order.

A recipe is ``{"name", "inputs": {"dataset": "file-…"}, "steps": [...]}``. Each step has an ``id``, a
``type`` (prepare, train, evaluate, export), optional ``needs`` and the settings of its type; a setting may
reference an input (``${inputs.dataset}``) or an earlier step's output (``${steps.train.model}``), which adds
that step to its needs. Each type's options are checked by the service that makes its object
(``dataset_operations_check``, ``job_request_check``, ``evaluation_limits_check`` and
``promotion_gate_check``, ``export_options_check``); a 400 names the field as ``steps[2].<its param>``.
A train step is the body of job creation: it goes through that API's own serializer and argument mapping.
"""

import re
from contextlib import contextmanager

from rest_framework.exceptions import ValidationError

from accounts_app.selectors import project_acting
from datasets_app.models import Dataset
from datasets_app.services import dataset_operations_check
from finetune_site.api_errors import first_error
from finetune_site.errors import InvalidRequest
from jobs_app.api import JobCreateSerializer, job_request_args
from jobs_app.services import job_request_check, promotion_gate_check
from models_app.services import evaluation_limits_check, export_options_check

REF = re.compile(r"^\$\{(?:inputs\.(?P<input>\w+)|steps\.(?P<step>[\w-]+)\.(?P<output>\w+))\}$")
STEP_ID = re.compile(r"^[A-Za-z][\w-]{0,63}$")
RECIPE_KEYS = {"name", "inputs", "steps"}
COMMON_KEYS = {"id", "type", "needs"}

# What each type takes (setting → shape of the object it names) and gives (output → shape).
INPUTS = {
    "prepare": {"dataset": "dataset"},
    "train": {"training_file": "dataset", "validation_file": "dataset"},
    "evaluate": {"model": "model", "dataset": "dataset"},
    "export": {"model": "model"},
}
OUTPUTS = {
    "prepare": {"dataset": "dataset", "validation": "dataset"},
    "train": {"model": "model"},
    "evaluate": {"evaluation": "evaluation", "model": "model"},
    "export": {"export": "export"},
}
REQUIRED = {"prepare": ("dataset", "operations"), "train": ("model", "training_file"),
            "evaluate": ("model", "dataset"), "export": ("model", "kind")}
OTHER_KEYS = {
    "prepare": {"operations"},
    "train": set(JobCreateSerializer().fields) - {"training_file", "validation_file"},
    "evaluate": {"max_rows", "max_new_tokens", "gate"},
    "export": {"kind", "quantization"},
}
EVALUATE_DEFAULTS = {"max_rows": 100, "max_new_tokens": 32}


def recipe_check(*, owner, recipe) -> dict:
    """The recipe, checked and normalised: ``{"name", "inputs", "steps": [{"id", "type", "needs",
    "settings"}]}`` in a running order. Raises ``InvalidRequest`` naming the first bad field."""
    if not isinstance(recipe, dict):
        raise InvalidRequest("a recipe is an object with inputs and steps", param=None)
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise InvalidRequest(f"unknown recipe key {unknown[0]!r}; use {', '.join(sorted(RECIPE_KEYS))}",
                             param=unknown[0])
    name = recipe.get("name") or ""
    if not isinstance(name, str) or len(name) > 100:
        raise InvalidRequest("name must be a string of at most 100 characters", param="name")
    inputs = recipe_inputs_check(owner=owner, inputs=recipe.get("inputs"))
    steps = _steps_parse(recipe.get("steps"), inputs)
    order = _order(steps)
    context = {"inputs": inputs, "steps": {s["id"]: s for s in steps}, "owner": owner}
    for index in order:
        with _within(f"steps[{index}]"):
            CHECKS[steps[index]["type"]](steps[index], context)
    return {"name": name, "inputs": {k: d.id for k, d in inputs.items()},
            "steps": [_public(steps[index]) for index in order]}


def recipe_inputs_check(*, owner, inputs) -> dict[str, Dataset]:
    """The recipe's inputs: name → one of ``owner``'s ready datasets."""
    if not isinstance(inputs, dict) or not inputs:
        raise InvalidRequest('inputs must name at least one dataset, e.g. {"dataset": "file-abc123"}',
                             param="inputs")
    found = {}
    for name, file_id in inputs.items():
        param = f"inputs.{name}"
        if not re.fullmatch(r"\w{1,40}", str(name)):
            raise InvalidRequest("an input's name is letters, digits or _", param=param)
        dataset = (Dataset.objects.filter(project=project_acting(owner), pk=file_id).first()
                   if isinstance(file_id, str) else None)
        if dataset is None:
            raise InvalidRequest(f"No such file: {file_id}", param=param, code="file_not_found")
        if dataset.status != Dataset.Status.READY:
            raise InvalidRequest(f"{file_id} ({dataset.filename}) is {dataset.status}; a pipeline starts from a "
                                 "ready dataset", param=param, code="dataset_not_ready")
        found[name] = dataset
    return found


@contextmanager
def _within(prefix: str, rename: dict | None = None):
    """Re-raise a check's 400 with its param placed inside the recipe (``steps[2].`` + param)."""
    try:
        yield
    except ValidationError as exc:
        param, message = first_error(exc.detail)
        raise InvalidRequest(message, param=_join(prefix, param, rename), code="invalid_value") from exc
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=_join(prefix, exc.param, rename), code=exc.code) from exc


def _join(prefix: str, param: str | None, rename: dict | None) -> str:
    if not param:
        return prefix
    head, _, rest = param.partition(".")
    head = (rename or {}).get(head, head)
    return (f"{prefix}.{head}" if prefix else head) + (f".{rest}" if rest else "")


def _steps_parse(raw, inputs: dict) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("steps must be a non-empty list", param="steps")
    steps, ids = [], set()
    for index, step in enumerate(raw):
        where = f"steps[{index}]"
        if not isinstance(step, dict):
            raise InvalidRequest("a step is an object with an id and a type", param=where)
        step_id, kind = step.get("id"), step.get("type")
        if not isinstance(step_id, str) or not STEP_ID.match(step_id):
            raise InvalidRequest("a step's id is a letter, then letters, digits, - or _ (up to 64)",
                                 param=f"{where}.id")
        if step_id in ids:
            raise InvalidRequest(f"two steps have the id {step_id!r}", param=f"{where}.id")
        ids.add(step_id)
        if kind not in INPUTS:
            raise InvalidRequest(f"unknown step type {kind!r}; use one of {', '.join(INPUTS)}", param=f"{where}.type")
        unknown = sorted(set(step) - COMMON_KEYS - set(INPUTS[kind]) - OTHER_KEYS[kind])
        if unknown:
            raise InvalidRequest(f"a {kind} step has no setting {unknown[0]!r}", param=f"{where}.{unknown[0]}")
        for key in REQUIRED[kind]:
            if step.get(key) in (None, ""):
                raise InvalidRequest(f"a {kind} step needs {key}", param=f"{where}.{key}")
        needs = step.get("needs", [])
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            raise InvalidRequest("needs is a list of step ids", param=f"{where}.needs")
        settings = {k: v for k, v in step.items() if k not in COMMON_KEYS}
        steps.append({"id": step_id, "type": kind, "needs": list(needs), "settings": settings, "index": index})
    by_id = {s["id"]: s for s in steps}
    for step in steps:
        _refs_check(step, by_id, inputs)
    return steps


def _refs_check(step: dict, by_id: dict, inputs: dict) -> None:
    """Each reference names an input or a step's output of the shape its setting takes; it becomes a need."""
    where = f"steps[{step['index']}]"
    for j, need in enumerate(step["needs"]):
        if need not in by_id or need == step["id"]:
            raise InvalidRequest(f"needs names no other step {need!r}", param=f"{where}.needs[{j}]")
    for key, shape in INPUTS[step["type"]].items():
        value = step["settings"].get(key)
        if value is None:
            continue
        match = REF.match(value) if isinstance(value, str) else None
        if match is None:
            raise InvalidRequest(f"{key} takes a reference like ${{inputs.dataset}} or ${{steps.<id>.{shape}}}",
                                 param=f"{where}.{key}")
        if match["input"]:
            if match["input"] not in inputs:
                raise InvalidRequest(f"no input named {match['input']!r}", param=f"{where}.{key}")
            given = "dataset"
        else:
            source = by_id.get(match["step"])
            if source is None or source is step:
                raise InvalidRequest(f"no other step has the id {match['step']!r}", param=f"{where}.{key}")
            given = OUTPUTS[source["type"]].get(match["output"])
            if given is None:
                raise InvalidRequest(f"a {source['type']} step gives {', '.join(OUTPUTS[source['type']])}, not "
                                     f"{match['output']!r}", param=f"{where}.{key}")
            if match["output"] == "validation" and not _splits(source):
                raise InvalidRequest(f"step {source['id']!r} gives a validation dataset only when its last "
                                     "operation is split", param=f"{where}.{key}")
            if source["id"] not in step["needs"]:
                step["needs"].append(source["id"])
        if given != shape:
            raise InvalidRequest(f"{key} of a {step['type']} step takes a {shape}; {value} is a {given}",
                                 param=f"{where}.{key}", code="input_shape_mismatch")


def _splits(step: dict) -> bool:
    operations = step["settings"].get("operations")
    return isinstance(operations, list) and bool(operations) and isinstance(operations[-1], dict) and \
        operations[-1].get("op") == "split"


def _order(steps: list[dict]) -> list[int]:
    """The steps' indexes, each after its needs (Kahn's algorithm); a cycle is a 400 naming a step in it."""
    by_id = {s["id"]: s for s in steps}
    done: list[int] = []
    placed: set[str] = set()
    waiting = list(steps)
    while waiting:
        ready = [s for s in waiting if set(s["needs"]) <= placed]
        if not ready:
            stuck = waiting[0]
            cycle = _cycle_from(stuck, by_id, placed)
            raise InvalidRequest(f"the steps form a cycle: {' → '.join(cycle)}",
                                 param=f"steps[{by_id[cycle[0]]['index']}].needs", code="pipeline_cycle")
        for step in ready:
            done.append(step["index"])
            placed.add(step["id"])
            waiting.remove(step)
    return done


def _cycle_from(step: dict, by_id: dict, placed: set[str]) -> list[str]:
    """Follow unplaced needs from a stuck step until one repeats: every stuck step has one, so it must."""
    path: list[str] = []
    current = step
    while current["id"] not in path:
        path.append(current["id"])
        current = by_id[next(n for n in current["needs"] if n not in placed)]
    return [*path[path.index(current["id"]):], current["id"]]


def _public(step: dict) -> dict:
    return {"id": step["id"], "type": step["type"], "needs": step["needs"], "settings": step["settings"]}


def _source(value: str, context: dict) -> tuple[str, dict | None]:
    """(the input's name, None) or (the output, the step) a reference names."""
    match = REF.match(value)
    return (match["input"], None) if match["input"] else (match["output"], context["steps"][match["step"]])


def _root_dataset(value: str, context: dict) -> Dataset:
    """The input dataset a dataset reference comes from (through prepare steps): what the checks read."""
    name, step = _source(value, context)
    while step is not None:
        name, step = _source(step["settings"]["dataset"], context)
    return context["inputs"][name]


def _format_of(value: str, context: dict) -> str:
    """The row format of the dataset a reference names: the input's, changed by any convert on the way."""
    name, step = _source(value, context)
    if step is None:
        return context["inputs"][name].format
    converts = [op.get("to") for op in step["settings"]["operations"] if op.get("op") == "convert"]
    return converts[-1] if converts else _format_of(step["settings"]["dataset"], context)


def _train_of(value: str, context: dict) -> dict:
    """The train step that made the model a reference names (through evaluate steps)."""
    _, step = _source(value, context)
    while step["type"] != "train":
        _, step = _source(step["settings"]["model"], context)
    return step


def _prepare_check(step: dict, context: dict) -> None:
    settings = step["settings"]
    settings["operations"] = dataset_operations_check(
        operations=settings["operations"], fmt=_format_of(settings["dataset"], context), owner=context["owner"])


def _train_check(step: dict, context: dict) -> None:
    """The job body as job creation checks it, the files standing for the input datasets they come from."""
    body = dict(step["settings"])
    for key in ("training_file", "validation_file"):
        if body.get(key):
            body[key] = _root_dataset(body[key], context).id
    form = JobCreateSerializer(data=body)
    form.is_valid(raise_exception=True)
    checked = job_request_check(owner=context["owner"], **job_request_args(form.validated_data))
    step["checked"] = {"base_model": checked.base_model, "adapter": checked.hyperparameters.get("adapter", "lora")}


def _evaluate_check(step: dict, context: dict) -> None:
    settings = step["settings"]
    for key, value in EVALUATE_DEFAULTS.items():
        settings.setdefault(key, value)
    evaluation_limits_check(max_rows=settings["max_rows"], max_new_tokens=settings["max_new_tokens"])
    with _within("", rename={"promotion_gate": "gate"}):
        settings["gate"] = promotion_gate_check(settings.get("gate"), has_validation=True)


def _export_check(step: dict, context: dict) -> None:
    settings = step["settings"]
    trained = _train_of(settings["model"], context)["checked"]
    settings["kind"], settings["quantization"] = export_options_check(
        kind=settings["kind"], quantization=settings.get("quantization"), base_model=trained["base_model"],
        adapter=trained["adapter"])


CHECKS = {"prepare": _prepare_check, "train": _train_check, "evaluate": _evaluate_check, "export": _export_check}
