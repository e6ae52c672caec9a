"""Graders before any compute: check one, or run it on a sample (OpenAI's ``/alpha/graders``)."""

from collections.abc import Mapping

from finetune_site.errors import InvalidRequest
from workers.graders import GraderError, grade_report, grader_check


def grader_validate(*, grader) -> None:
    """Refuse a grader that cannot run: a 400 whose ``param`` names its field (``grader.operation``)."""
    try:
        grader_check(grader, param="grader")
    except GraderError as error:
        raise InvalidRequest(error.message, param=error.param, code="invalid_grader") from error


def grader_run(*, grader, model_sample: str, item) -> dict:
    """The reward ``grader`` gives ``model_sample`` for the row ``item``, with each grader's score and the
    errors met (a field the row lacks): what a reinforcement job would reward."""
    if not isinstance(item, Mapping):
        raise InvalidRequest("item must be an object: the row the sample answers", param="item")
    try:
        grader_check(grader, item_fields=set(item), param="grader")
    except GraderError as error:
        raise InvalidRequest(error.message, param=error.param, code="invalid_grader") from error
    return grade_report(grader, sample=model_sample, item=item)
