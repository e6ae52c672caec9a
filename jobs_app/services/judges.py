"""The judge models of ``score_model`` graders: which model a grader names, whether the job's owner may
use it, and its files on local disk.

A grader names its judge as the API names a model: a base model's name, or a tuned model of the
owner's registry (its id, ``name@vN``, ``name@alias``). Tuned models live in ``models_app``, above this
app: it registers a resolver in ``ModelsAppConfig.ready()`` (``judge_resolver_register``). Base models
are resolved here. A name is resolved when it is used (the job's run, a dry run), so an alias moved in
between judges with the version it points at then.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from models_app.base_models.models import BaseModel
from models_app.base_models.services import base_model_local_path
from workers.graders import judge_names
from workers.loading import ModelLoadError


@dataclass(frozen=True)
class JudgeModel:
    """A model that can judge. files: ``(base model directory, adapter or full model directory or None)``
    on local disk, fetched from storage on the first call."""

    name: str
    files: Callable[[], tuple[str, str | None]]


Resolver = Callable[[object, str], JudgeModel | None]  # (owner, name) → the model, or None: not one of its
_resolvers: list[Resolver] = []


def judge_resolver_register(resolver: Resolver) -> None:
    """Let a higher app resolve judge names (``models_app``: tuned models); registered once per process."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def judge_find(owner, name: str) -> JudgeModel | None:
    """The model ``name`` names that ``owner`` may use as a judge, or None."""
    for resolver in _resolvers:
        if (found := resolver(owner, name)) is not None:
            return found
    base = BaseModel.objects.filter(name=name).first()
    if base is None:
        return None
    return JudgeModel(name=name, files=lambda: (base_model_local_path(base), None))


def judge_problem(owner) -> Callable[[str], str]:
    """``workers.graders.grader_check``'s ``judge_models``: why ``owner`` cannot use a model as a judge."""
    def problem(name: str) -> str:
        if judge_find(owner, name) is not None:
            return ""
        return (f"names {name!r}, which is not a model you can use: give a base model's name or one of your "
                "tuned models (its id, name@vN or name@alias)")

    return problem


def judges_local(owner, grader: Mapping) -> dict[str, tuple[str, str | None]]:
    """The local files of every judge ``grader`` names, fetched: what ``workers.judge.judge_make`` takes.
    ModelLoadError when one is no longer there (deleted, or the name now points nowhere)."""
    found = {}
    for name in sorted(judge_names(grader)):
        judge = judge_find(owner, name)
        if judge is None:
            raise ModelLoadError(f"the judge model {name!r} of the grader is no longer available")
        found[name] = judge.files()
    return found

