"""Graders shaped like OpenAI's: they score a sampled answer against its row, for reinforcement.

A grader is a JSON object. Its text fields are templates: ``{{sample.output_text}}`` is the answer
the model wrote, ``{{item.<field>}}`` (``{{item.a.b}}`` for nested objects) a field of the row.

- ``string_check``: ``input`` against ``reference`` with ``operation`` ``eq`` (equal), ``ne`` (not
  equal), ``like`` (contains) or ``ilike`` (contains, ignoring case); 1 or 0.
- ``text_similarity``: ``input`` against ``reference`` by ``evaluation_metric``: ``fuzzy_match``
  (difflib's ratio), ``bleu`` (sacrebleu, sentence level), ``gleu`` (nltk), ``rouge_1`` to
  ``rouge_5`` or ``rouge_l`` (rouge-score F1); 0..1.
- ``multi``: several graders by name (``graders``), combined by ``calculate_output``, a formula over
  their names (``0.7 * exact + 0.3 * close``: numbers, + - * / **, parentheses, min, max, abs,
  floor, ceil, sqrt, exp, log), or by ``weights`` (a weighted sum).
- ``score_model``: a judge model reads ``input`` (chat messages, templates filled) and answers
  with a number, clipped to ``range`` (default [0, 1]). The judge is a function the caller gives
  (``judge(model, messages, sampling_params) -> text``, e.g. ``workers.judge.judge_make``); the platform
  resolves ``model`` to one of its models.

``grader_check`` refuses a grader that does not parse, naming the field (``grader.operation``);
``grade`` scores one answer; ``grader_reward`` is the reward function GRPOTrainer calls.
"""

import ast
import difflib
import json
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

TYPES = ("string_check", "text_similarity", "multi", "score_model")
OPERATIONS = ("eq", "ne", "like", "ilike")
METRICS = ("fuzzy_match", "bleu", "gleu", *(f"rouge_{n}" for n in range(1, 6)), "rouge_l")
UNSUPPORTED_METRICS = {"meteor": "needs WordNet data, which is not installed",
                       "cosine": "needs an embedding model"}
DEFAULT_NAME = "grader"
MAX_DEPTH = 3  # a multi inside a multi inside a multi
TEMPLATE = re.compile(r"{{\s*([^{}]*?)\s*}}")
FUNCTIONS: dict[str, Callable] = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil,
                                  "sqrt": math.sqrt, "exp": math.exp, "log": math.log}
OPERATORS: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                                   ast.Div: operator.truediv, ast.Pow: operator.pow,
                                   ast.USub: operator.neg, ast.UAdd: operator.pos}
# what a judge's answer may be sampled with (default: greedy, workers.judge.DEFAULT_ANSWER_TOKENS tokens)
SAMPLING_LIMITS = {"temperature": (0, 2, int | float), "top_p": (0, 1, int | float),
                   "max_completion_tokens": (1, 4096, int)}
Judge = Callable[[str, list[dict], Mapping], str]  # (model, messages, sampling_params) → the judge's answer


class GraderError(ValueError):
    """A grader that cannot run; ``param`` names the field, e.g. ``grader.graders.exact.operation``."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = f"{param} {message}"


@dataclass(frozen=True)
class Grade:
    """One answer's score. scores: each grader's own (by name, a multi's parts too); errors: what
    went wrong while grading (the reward is then 0 for that grader)."""

    reward: float
    scores: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


# --- checking -------------------------------------------------------------------------------------

def grader_check(grader, *, item_fields: Iterable[str] | None = None, param: str = "grader",
                 judge_models: Callable[[str], str] | None = None) -> None:
    """Refuse a grader that cannot run, naming the field (``GraderError``).

    item_fields: the fields a row has (e.g. the first row of the training file); a template that
        reads another is refused. None: not known, not checked.
    judge_models: for ``score_model``, returns why the model cannot judge ("" when it can).
    """
    _check(grader, param, set(item_fields) if item_fields is not None else None, judge_models, depth=1)


def _check(grader, param: str, fields: set[str] | None, judge_models, *, depth: int) -> None:
    if not isinstance(grader, Mapping):
        raise GraderError(param, "must be an object with a type, e.g. {\"type\": \"string_check\", ...}")
    kind = grader.get("type")
    if kind == "python":
        raise GraderError(f"{param}.type", '"python" graders run code and are not offered here; use '
                                          + ", ".join(TYPES))
    if kind not in TYPES:
        raise GraderError(f"{param}.type", f"must be one of {', '.join(TYPES)}, not {kind!r}")
    known = {"type", "name", *_FIELDS[kind]}
    unknown = sorted(set(grader) - known)
    if unknown:
        raise GraderError(f"{param}.{unknown[0]}", f"is not a field of a {kind} grader; its fields: "
                                                    + ", ".join(sorted(known)))
    if "name" in grader and not _is_text(grader["name"]):
        raise GraderError(f"{param}.name", "must be a non-empty string")
    if kind in ("string_check", "text_similarity"):
        for name in ("input", "reference"):
            _template_check(grader.get(name), f"{param}.{name}", fields)
    if kind == "string_check" and grader.get("operation") not in OPERATIONS:
        raise GraderError(f"{param}.operation", f"must be one of {', '.join(OPERATIONS)}, "
                                                f"not {grader.get('operation')!r}")
    if kind == "text_similarity":
        _metric_check(grader.get("evaluation_metric"), f"{param}.evaluation_metric")
        _number_check(grader, "pass_threshold", param, required=False)
    if kind == "multi":
        _multi_check(grader, param, fields, judge_models, depth=depth)
    if kind == "score_model":
        _score_model_check(grader, param, fields, judge_models)


_FIELDS = {
    "string_check": ("input", "reference", "operation"),
    "text_similarity": ("input", "reference", "evaluation_metric", "pass_threshold"),
    "multi": ("graders", "calculate_output", "weights"),
    "score_model": ("model", "input", "range", "sampling_params", "pass_threshold"),
}


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _template_check(value, param: str, fields: set[str] | None) -> None:
    if not isinstance(value, str):
        raise GraderError(param, 'must be a string, e.g. "{{sample.output_text}}" or "{{item.answer}}"')
    for reference in TEMPLATE.findall(value):
        space, _, path = reference.partition(".")
        if reference == "sample.output_text":
            continue
        if space != "item" or not path:
            raise GraderError(param, f"reads {{{{{reference}}}}}; a template reads {{{{sample.output_text}}}} "
                                     "or {{item.<field>}}")
        if fields is not None and path.split(".")[0] not in fields:
            raise GraderError(param, f"reads {{{{{reference}}}}}, but the rows have no field "
                                     f"{path.split('.')[0]!r} (their fields: {', '.join(sorted(fields)) or 'none'})")


def _metric_check(metric, param: str) -> None:
    if metric in UNSUPPORTED_METRICS:
        raise GraderError(param, f"{metric!r} {UNSUPPORTED_METRICS[metric]}; use one of {', '.join(METRICS)}")
    if metric not in METRICS:
        raise GraderError(param, f"must be one of {', '.join(METRICS)}, not {metric!r}")


def _number_check(grader: Mapping, name: str, param: str, *, required: bool) -> None:
    value = grader.get(name)
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GraderError(f"{param}.{name}", "must be a number")


def _multi_check(grader: Mapping, param: str, fields, judge_models, *, depth: int) -> None:
    graders = grader.get("graders")
    if depth >= MAX_DEPTH:
        raise GraderError(param, f"nests multi graders more than {MAX_DEPTH} deep")
    if not isinstance(graders, Mapping) or not graders:
        raise GraderError(f"{param}.graders", 'must be an object of graders by name, e.g. {"exact": {...}}')
    for name, sub in graders.items():
        if not name.isidentifier() or name in FUNCTIONS:
            raise GraderError(f"{param}.graders.{name}", "a name must be a word (letters, digits, _) that the "
                                                         "formula can use, and not a function's name")
        _check(sub, f"{param}.graders.{name}", fields, judge_models, depth=depth + 1)
    formula, weights = grader.get("calculate_output"), grader.get("weights")
    if (formula is None) == (weights is None):
        raise GraderError(f"{param}.calculate_output", 'give calculate_output (e.g. "0.5 * exact + 0.5 * close") '
                                                       "or weights (e.g. {\"exact\": 0.5}), one of them")
    if formula is not None:
        formula_check(formula, set(graders), f"{param}.calculate_output")
    elif not isinstance(weights, Mapping) or not weights:
        raise GraderError(f"{param}.weights", "must be an object of numbers by grader name")
    else:
        for name in weights:
            if name not in graders:
                raise GraderError(f"{param}.weights.{name}", f"names no grader; the graders: {', '.join(graders)}")
            _number_check(weights, name, f"{param}.weights", required=True)


def _score_model_check(grader: Mapping, param: str, fields, judge_models) -> None:
    if not _is_text(grader.get("model")):
        raise GraderError(f"{param}.model", "must name the judge model, e.g. a base or tuned model of this platform")
    messages = grader.get("input")
    if not isinstance(messages, list) or not messages:
        raise GraderError(f"{param}.input", 'must be a list of messages, e.g. [{"role": "user", "content": '
                                            '"Score 0 to 1: {{sample.output_text}}"}]')
    for index, message in enumerate(messages):
        where = f"{param}.input[{index}]"
        if not isinstance(message, Mapping) or message.get("role") not in ("system", "developer", "user",
                                                                             "assistant"):
            raise GraderError(where, "must be a message with a role (system, developer, user, assistant) "
                                     "and content")
        _template_check(message.get("content"), f"{where}.content", fields)
    low, high = _range(grader, param)
    if not low < high:
        raise GraderError(f"{param}.range", f"must be [low, high] with low < high, not {grader.get('range')}")
    _number_check(grader, "pass_threshold", param, required=False)
    params = grader.get("sampling_params", {})
    if not isinstance(params, Mapping) or set(params) - set(SAMPLING_LIMITS):
        raise GraderError(f"{param}.sampling_params", "may hold temperature, top_p and max_completion_tokens")
    for name, (low, high, kind) in SAMPLING_LIMITS.items():
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high
                                  or (name == "top_p" and value == 0)):
            raise GraderError(f"{param}.sampling_params.{name}", f"must be a number from {low} to {high}"
                              + (", above 0" if name == "top_p" else ""))
    if judge_models is not None and (problem := judge_models(grader["model"])):
        raise GraderError(f"{param}.model", problem)


def _range(grader: Mapping, param: str) -> tuple[float, float]:
    value = grader.get("range", [0, 1])
    if not (isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise GraderError(f"{param}.range", "must be two numbers [low, high]")
    return float(value[0]), float(value[1])


def formula_check(formula, names: set[str], param: str) -> ast.Expression:
    """The parsed ``calculate_output``; refused unless it is arithmetic over ``names``."""
    if not isinstance(formula, str) or not formula.strip():
        raise GraderError(param, "must be a formula over the graders' names, e.g. \"0.5 * a + 0.5 * b\"")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as error:
        raise GraderError(param, f"does not parse ({error.msg}); write e.g. \"0.5 * a + 0.5 * b\"") from error
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCTIONS:
            raise GraderError(param, f"uses {node.id!r}, which names no grader; the graders: "
                                     + ", ".join(sorted(names)))
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                                               and not node.keywords):
            raise GraderError(param, "calls a function it may not; the functions: " + ", ".join(FUNCTIONS))
        if not isinstance(node, ast.Expression | ast.BinOp | ast.UnaryOp | ast.Name | ast.Load | ast.Call
                          | ast.Constant | ast.operator | ast.unaryop) or \
                (isinstance(node, ast.operator | ast.unaryop) and type(node) not in OPERATORS) or \
                (isinstance(node, ast.Constant) and (isinstance(node.value, bool)
                                                     or not isinstance(node.value, int | float))):
            raise GraderError(param, "may hold only numbers, grader names, + - * / **, parentheses and "
                                     + ", ".join(FUNCTIONS))
    return tree


# --- grading --------------------------------------------------------------------------------------

def grade(grader: Mapping, *, sample: str, item: Mapping, judge: Judge | None = None) -> Grade:
    """Score ``sample`` (the model's answer) against ``item`` (its row); a checked grader."""
    scores: dict[str, float] = {}
    errors: list[str] = []
    reward = _score(grader, sample, item, judge, scores, errors)
    return Grade(reward=reward, scores=scores, errors=errors)


def _score(grader: Mapping, sample: str, item: Mapping, judge, scores: dict, errors: list) -> float:
    name = grader.get("name") or DEFAULT_NAME
    try:
        value = _SCORERS[grader["type"]](grader, sample, item, judge, scores, errors)
    except (KeyError, ValueError, ArithmeticError) as error:
        errors.append(f"{name}: {error}")
        value = 0.0
    scores[name] = value
    return value


def template_render(text: str, *, sample: str, item: Mapping) -> str:
    """``text`` with its ``{{sample.output_text}}`` and ``{{item.*}}`` filled; a missing field is a KeyError."""
    def fill(match: re.Match) -> str:
        reference = match.group(1)
        if reference == "sample.output_text":
            return sample
        value = item
        for part in reference.removeprefix("item.").split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(f"the row has no {reference}")
            value = value[part]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return TEMPLATE.sub(fill, text)


def _pair(grader: Mapping, sample: str, item: Mapping) -> tuple[str, str]:
    return (template_render(grader["input"], sample=sample, item=item),
            template_render(grader["reference"], sample=sample, item=item))


def _string_check(grader, sample, item, judge, scores, errors) -> float:
    given, reference = _pair(grader, sample, item)
    operation = grader["operation"]
    if operation == "eq":
        return float(given == reference)
    if operation == "ne":
        return float(given != reference)
    if operation == "like":
        return float(reference in given)
    return float(reference.lower() in given.lower())


def _text_similarity(grader, sample, item, judge, scores, errors) -> float:
    given, reference = _pair(grader, sample, item)
    return text_similarity(given, reference, grader["evaluation_metric"])


def text_similarity(given: str, reference: str, metric: str) -> float:
    """How close ``given`` is to ``reference`` by ``metric`` (one of ``METRICS``), 0..1."""
    if metric == "fuzzy_match":
        return difflib.SequenceMatcher(None, given, reference).ratio()
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(given, [reference], smooth_method="exp").score / 100
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([reference.split()], given.split()))
    from rouge_score import rouge_scorer

    name = "rougeL" if metric == "rouge_l" else "rouge" + metric.removeprefix("rouge_")
    return rouge_scorer.RougeScorer([name]).score(reference, given)[name].fmeasure


def _multi(grader, sample, item, judge, scores, errors) -> float:
    values = {name: _score({**sub, "name": name}, sample, item, judge, scores, errors)
              for name, sub in grader["graders"].items()}
    if grader.get("weights") is not None:
        return sum(weight * values[name] for name, weight in grader["weights"].items())
    tree = formula_check(grader["calculate_output"], set(values), "calculate_output")
    return float(_evaluate(tree.body, values))


def _evaluate(node: ast.AST, values: Mapping[str, float]):
    if isinstance(node, ast.Constant):  # as a float: 9 ** 9 ** 9 overflows at once instead of running on
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        return OPERATORS[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.BinOp):
        return OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    return FUNCTIONS[node.func.id](*(_evaluate(arg, values) for arg in node.args))


SCORE = re.compile(r"-?\d+(?:\.\d+)?")


def _score_model(grader, sample, item, judge, scores, errors) -> float:
    if judge is None:
        raise ValueError("no judge model is available here")
    messages = [{"role": "system" if m["role"] == "developer" else m["role"],
                 "content": template_render(m["content"], sample=sample, item=item)} for m in grader["input"]]
    answer = judge(grader["model"], messages, grader.get("sampling_params") or {})
    found = SCORE.search(answer or "")
    if found is None:
        raise ValueError(f"the judge answered {answer[:80]!r}, with no number in it")
    low, high = _range(grader, "grader")
    return min(high, max(low, float(found.group())))


def judge_names(grader: Mapping) -> set[str]:
    """The judge models a checked grader names (its ``score_model`` graders, inside a multi too)."""
    if grader.get("type") == "score_model":
        return {grader["model"]}
    return set().union(*(judge_names(sub) for sub in (grader.get("graders") or {}).values()))


_SCORERS: dict[str, Callable] = {"string_check": _string_check, "text_similarity": _text_similarity,
                                 "multi": _multi, "score_model": _score_model}


# --- the API's dry run and the trainer's reward -------------------------------------------------

def grade_report(grader: Mapping, *, sample: str, item: Mapping, judge: Judge | None = None) -> dict:
    """OpenAI's ``graders/run`` answer: the reward, and metadata with each grader's score and errors."""
    started = time.perf_counter()
    result = grade(grader, sample=sample, item=item, judge=judge)
    name = grader.get("name") or DEFAULT_NAME
    return {"reward": result.reward,
            "metadata": {"name": name, "type": grader["type"], "errors": result.errors,
                         "execution_time": round(time.perf_counter() - started, 6), "scores": result.scores,
                         "token_usage": None, "sampled_model_name": None},
            "sub_rewards": {key: value for key, value in result.scores.items() if key != name},
            "model_grader_token_usage_per_model": {}}


def grader_reward(grader: Mapping, judge: Judge | None = None) -> Callable:
    """The reward function GRPOTrainer calls: each completion graded against its row (the ``item``
    column: the row as JSON)."""
    def reward(prompts, completions, item, **_) -> list[float]:
        return [grade(grader, sample=_answer(completion), item=json.loads(row), judge=judge).reward
                for completion, row in zip(completions, item, strict=True)]

    reward.__name__ = grader.get("name") or grader["type"]  # the trainer logs rewards/<name>/mean
    return reward


def _answer(completion) -> str:
    """A sampled completion as text: chat completions are a list holding the assistant's message."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return completion
