"""Graders shaped like OpenAI's: checked before a job, scoring samples during it. Pure: no model."""

import json

import pytest

from workers.graders import GraderError, grade, grade_report, grader_check, grader_reward

ANSWER = {"answer": "Paris", "facts": {"country": "France"}}


def _string(operation: str, reference: str = "{{item.answer}}") -> dict:
    return {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}


@pytest.mark.parametrize(("operation", "sample", "reward"), [
    ("eq", "Paris", 1.0), ("eq", "paris", 0.0), ("ne", "Lyon", 1.0), ("ne", "Paris", 0.0),
    ("like", "It is Paris.", 1.0), ("like", "It is paris.", 0.0), ("ilike", "IT IS PARIS", 1.0),
    ("ilike", "Lyon", 0.0),
])
def test_string_check_operations_as_openai_defines_them(operation, sample, reward):
    assert grade(_string(operation), sample=sample, item=ANSWER).reward == reward


def test_templates_read_nested_item_fields_and_non_text_as_json():
    grader = _string("eq", "{{ item.facts.country }}")
    assert grade(grader, sample="France", item=ANSWER).reward == 1.0
    assert grade(_string("eq", "{{item.facts}}"), sample='{"country": "France"}', item=ANSWER).reward == 1.0


@pytest.mark.parametrize(("metric", "low", "high"), [
    ("fuzzy_match", 0.85, 0.95), ("bleu", 0.3, 0.8), ("gleu", 0.5, 0.7), ("rouge_1", 0.8, 0.85),
    ("rouge_2", 0.55, 0.65), ("rouge_l", 0.8, 0.85),
])
def test_text_similarity_scores_near_answers_between_0_and_1(metric, low, high):
    grader = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.ref}}",
              "evaluation_metric": metric}
    item = {"ref": "the cat sat on a mat"}
    assert low <= grade(grader, sample="the cat sat on the mat", item=item).reward <= high
    assert grade(grader, sample="the cat sat on a mat", item=item).reward == pytest.approx(1.0)


def test_multi_combines_named_graders_by_formula_or_weights():
    close = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
             "evaluation_metric": "fuzzy_match"}
    multi = {"type": "multi", "graders": {"exact": _string("ilike"), "close": close},
             "calculate_output": "0.75 * exact + 0.25 * min(close, 1)"}
    result = grade(multi, sample="Paris", item=ANSWER)
    assert result.reward == 1.0 and result.scores == {"exact": 1.0, "close": 1.0, "grader": 1.0}
    weighted = {**multi, "weights": {"exact": 2, "close": 1}}
    del weighted["calculate_output"]
    assert grade(weighted, sample="Lyon", item=ANSWER).reward == pytest.approx(grade(close, sample="Lyon",
                                                                                       item=ANSWER).reward)


def test_score_model_parses_the_judges_number_within_its_range():
    judge_said = []

    def judge(model, messages, sampling_params):
        judge_said.append((model, messages))
        return "Score: 7.5 out of 10"

    grader = {"type": "score_model", "model": "tiny-llama", "range": [0, 5],
              "input": [{"role": "developer", "content": "Rate against {{item.answer}}."},
                        {"role": "user", "content": "{{sample.output_text}}"}]}
    grader_check(grader)
    assert grade(grader, sample="Paris!", item=ANSWER, judge=judge).reward == 5.0  # clipped to the range
    assert judge_said == [("tiny-llama", [{"role": "system", "content": "Rate against Paris."},
                                          {"role": "user", "content": "Paris!"}])]
    mute = grade(grader, sample="x", item=ANSWER, judge=lambda model, messages, params: "no idea")
    assert mute.reward == 0.0 and "no number" in mute.errors[0]


@pytest.mark.parametrize(("grader", "param", "words"), [
    ("string_check", "grader", "must be an object"),
    ({"type": "python", "source": "..."}, "grader.type", "not offered"),
    ({"type": "label_model"}, "grader.type", "must be one of"),
    ({**_string("eq"), "operaton": "eq"}, "grader.operaton", "is not a field of a string_check grader"),
    (_string("contains"), "grader.operation", "eq, ne, like, ilike"),
    (_string("eq", "{{item.answr}}"), "grader.reference", "no field 'answr'"),
    (_string("eq", "{{answer}}"), "grader.reference", "{{item.<field>}}"),
    ({**_string("eq"), "input": 3}, "grader.input", "must be a string"),
    ({"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "x", "evaluation_metric": "meteor"},
     "grader.evaluation_metric", "WordNet"),
    ({"type": "multi", "graders": {"a": _string("eq")}, "calculate_output": "a +"}, "grader.calculate_output",
     "does not parse"),
    ({"type": "multi", "graders": {"a": _string("eq")}, "calculate_output": "a + b"}, "grader.calculate_output",
     "names no grader"),
    ({"type": "multi", "graders": {"a": _string("eq")}, "calculate_output": "__import__('os')"},
     "grader.calculate_output", "calls a function it may not"),
    ({"type": "multi", "graders": {"a": _string("eq")}, "calculate_output": "a.real"}, "grader.calculate_output",
     "may hold only"),
    ({"type": "multi", "graders": {"a": {**_string("eq"), "operation": "x"}}, "calculate_output": "a"},
     "grader.graders.a.operation", "must be one of"),
    ({"type": "score_model", "model": "m", "input": [{"role": "user", "content": "x"}], "range": [1, 0]},
     "grader.range", "low < high"),
])
def test_a_bad_grader_is_refused_naming_its_field(grader, param, words):
    with pytest.raises(GraderError) as refused:
        grader_check(grader, item_fields={"answer"})
    assert refused.value.param == param and words in refused.value.message, refused.value.message


def test_a_missing_row_field_at_grading_time_is_a_zero_with_its_error():
    result = grade(_string("eq"), sample="Paris", item={})
    assert result.reward == 0.0 and "no item.answer" in result.errors[0]


def test_the_dry_run_answers_in_openais_shape():
    report = grade_report({"type": "multi", "name": "total", "graders": {"exact": _string("eq")},
                           "calculate_output": "exact"}, sample="Paris", item=ANSWER)
    assert report["reward"] == 1.0 and report["sub_rewards"] == {"exact": 1.0}
    assert report["metadata"]["name"] == "total" and report["metadata"]["type"] == "multi"
    assert report["metadata"]["errors"] == [] and report["metadata"]["execution_time"] >= 0


def test_the_trainers_reward_grades_each_chat_completion_against_its_row():
    reward = grader_reward(_string("eq"))
    completions = [[{"role": "assistant", "content": "Paris"}], [{"role": "assistant", "content": "Rome"}]]
    rows = [json.dumps(ANSWER), json.dumps({"answer": "Rome"})]
    assert reward(prompts=[[], []], completions=completions, item=rows) == [1.0, 1.0]
    assert reward.__name__ == "exact"
