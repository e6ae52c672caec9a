import json
import math

import pytest

from workers.evaluation import (
    EvalConfig,
    EvalError,
    EvalTarget,
    generation_metrics,
    improvement,
    label_of,
    run_evaluation,
)
from workers.sample_data import classification_rows, classification_write


def test_tuned_model_beats_its_base_on_the_task_it_learned(tiny_model_path, trained_adapter, tmp_path):
    data = classification_write(tmp_path / "valid.jsonl", 12, seed=7)
    events = []
    config = EvalConfig(base_model_path=str(tiny_model_path), data_file=str(data), max_new_tokens=4,
                        targets=(EvalTarget("base"), EvalTarget("tuned", str(trained_adapter))))
    result = run_evaluation(config, events.append)
    base, tuned = result.metrics["base"], result.metrics["tuned"]
    assert result.classification and result.labels == ["food", "music", "sports", "weather"]
    assert tuned["eval_loss"] < base["eval_loss"] * 0.75
    assert tuned["perplexity"] == pytest.approx(math.exp(tuned["eval_loss"]), rel=1e-3)
    assert tuned["accuracy"] > base["accuracy"]
    assert tuned["exact_match"] > base["exact_match"]
    assert result.rows[0]["reference"] == "sports" and set(result.rows[0]["outputs"]) == {"base", "tuned"}
    assert events[-1].step == events[-1].total_steps == 24


def test_same_rows_same_decoding_give_the_same_outputs(tiny_model_path, trained_adapter, tmp_path):
    data = classification_write(tmp_path / "valid.jsonl", 4, seed=3)
    config = EvalConfig(base_model_path=str(tiny_model_path), data_file=str(data), max_new_tokens=4,
                        targets=(EvalTarget("a", str(trained_adapter)), EvalTarget("b", str(trained_adapter))))
    result = run_evaluation(config, lambda event: None)
    assert result.metrics["a"] == result.metrics["b"]
    assert all(row["outputs"]["a"] == row["outputs"]["b"] for row in result.rows)


def test_text_rows_get_loss_but_no_generation_metrics(tiny_model_path, tmp_path):
    data = tmp_path / "text.jsonl"
    data.write_text(json.dumps({"text": "the rain and the wind"}) + "\n")
    config = EvalConfig(base_model_path=str(tiny_model_path), data_file=str(data), targets=(EvalTarget("base"),))
    metrics = run_evaluation(config, lambda event: None).metrics["base"]
    assert set(metrics) == {"eval_loss", "perplexity"}


def test_rows_without_an_answer_are_an_error_naming_the_file(tiny_model_path, tmp_path):
    data = tmp_path / "users.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    config = EvalConfig(base_model_path=str(tiny_model_path), data_file=str(data), targets=(EvalTarget("base"),))
    with pytest.raises(EvalError, match="users.jsonl"):
        run_evaluation(config, lambda event: None)


def test_generation_metrics_score_perfect_and_wrong_answers():
    perfect = generation_metrics(["Food", "rain all day"], ["food", "rain all day"], ["food", "rain all day"])
    assert perfect["exact_match"] == perfect["accuracy"] == perfect["rougeL"] == 1.0
    assert perfect["bleu"] > 99
    wrong = generation_metrics(["music", "sun"], ["food", "rain all day"], [])
    assert wrong["exact_match"] == wrong["rougeL"] == 0.0 and "accuracy" not in wrong


def test_an_output_counts_for_the_label_it_begins_with():
    assert label_of("Sports. The match", ["sports", "food"]) == "sports"
    assert label_of("sportsmanship", ["sports"]) is None


def test_improvement_is_positive_when_tuned_is_better_either_way():
    assert improvement("eval_loss", 2.0, 1.0) == 0.5
    assert improvement("accuracy", 0.5, 0.75) == 0.5
    assert improvement("eval_loss", 1.0, 2.0) < 0


def test_rows_are_the_classification_rows():
    assert classification_rows(1)[0]["messages"][1]["content"] == "sports"
