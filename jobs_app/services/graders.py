"""Graders before any compute: check one, or run it on a sample (OpenAI's ``/alpha/graders``)."""

from collections.abc import Mapping

from finetune_site.errors import InvalidRequest
from jobs_app.services.judges import judge_problem, judges_local
from workers.graders import GraderError, grade_report, grader_check
from workers.loading import ModelLoadError

_judges = None  # the dry runs' judge models, kept loaded in this process (workers.inference.ModelCache)


def grader_validate(*, owner, grader) -> None:
    """Refuse a grader that cannot run: a 400 whose ``param`` names its field (``grader.operation``), a judge
    model ``owner`` cannot use included (``grader.model``)."""
    _grader_check(owner, grader)


def _grader_check(owner, grader, item_fields=None) -> None:
    try:
        grader_check(grader, item_fields=item_fields, param="grader", judge_models=judge_problem(owner))
    except GraderError as error:
        raise InvalidRequest(error.message, param=error.param, code="invalid_grader") from error


def grader_run(*, owner, grader, model_sample: str, item) -> dict:
    """The reward ``grader`` gives ``model_sample`` for the row ``item``, with each grader's score and the
    errors met (a field the row lacks): what a reinforcement job would reward. A ``score_model`` grader's
    judge (one of ``owner``'s models) answers here, in this process."""
    global _judges
    if not isinstance(item, Mapping):
        raise InvalidRequest("item must be an object: the row the sample answers", param="item")
    _grader_check(owner, grader, item_fields=set(item))
    judge = None
    try:
        models = judges_local(owner, grader)
    except ModelLoadError as error:
        raise InvalidRequest(str(error), param="grader.model", code="invalid_grader") from error
    if models:
        from workers.inference import ModelCache
        from workers.judge import judge_make

        _judges = ModelCache(size=1) if _judges is None else _judges
        judge = judge_make(models, cache=_judges)
    return grade_report(grader, sample=model_sample, item=item, judge=judge)


def grader_try(*, owner, grader, model_sample: str, rows: list) -> list[dict]:
    """``grader_run`` on each of ``rows`` (the wizard's dry run on the first rows of a training file):
    per row, its number, the reward and the problems met. A grader that cannot run is the same 400."""
    if not isinstance(grader, Mapping):
        raise InvalidRequest("Write the grader as a JSON object first.", param="grader")
    results = []
    for number, row in enumerate(rows, start=1):
        report = grader_run(owner=owner, grader=grader, model_sample=model_sample, item=row)
        results.append({"row": number, "reward": report["reward"], "errors": report["metadata"]["errors"]})
    return results
