"""A model of the platform as the judge of a score_model grader, on the tiny model."""

from workers.graders import grade
from workers.inference import ModelCache
from workers.judge import judge_make

RUBRIC = {"type": "score_model", "model": "judge", "range": [0, 5],
          "input": [{"role": "user", "content": "Score this answer from 0 to 10: {{sample.output_text}}"}]}


def test_a_tuned_judge_answers_greedily_and_its_number_is_the_score(tiny_model_path, judge_adapter):
    loads = []
    cache = ModelCache(size=1, loader=lambda *key: loads.append(key) or _load(*key))
    judge = judge_make({"judge": (str(tiny_model_path), str(judge_adapter))}, cache=cache)
    first = grade(RUBRIC, sample="The team won.", item={}, judge=judge)
    assert first.errors == [] and first.reward == 5.0  # it said 7: clipped to the grader's range
    wide = grade({**RUBRIC, "range": [0, 10]}, sample="Soup.", item={}, judge=judge)
    assert wide.reward == 7.0 and len(loads) == 1  # loaded once for every sample


def test_an_unknown_judge_or_a_wordy_answer_is_an_error_and_reward_zero(tiny_model_path):
    judge = judge_make({"base": (str(tiny_model_path), None)})
    unknown = grade(RUBRIC, sample="x", item={}, judge=judge)
    assert unknown.reward == 0.0 and "not available" in unknown.errors[0]
    base = grade({**RUBRIC, "model": "base", "sampling_params": {"max_completion_tokens": 3}}, sample="x", item={},
                 judge=judge)
    assert 0.0 <= base.reward <= 5.0  # the random base answers whatever it answers; never outside the range


def _load(base, adapter):
    from workers.inference import inference_model_load

    return inference_model_load(base, adapter)
