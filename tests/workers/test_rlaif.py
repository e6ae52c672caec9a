"""RLAIF on the tiny model: the policy samples, a judge ranks, DPO learns what the judge prefers."""

import json

from workers.config import TrainConfig
from workers.events import ArtifactSaved, LogLine
from workers.inference import GenerateConfig, generate, inference_model_load
from workers.sample_data import classification_rows

WORD = "the"  # the judge's property: the answer holds "the"; the random base's greedy answers never do
JUDGE = {"type": "string_check", "name": "has_word", "input": "{{sample.output_text}}", "reference": WORD,
         "operation": "ilike"}


def _share_with_the_property(base_path, adapter, prompts) -> float:
    model = inference_model_load(str(base_path), adapter)
    answers = [generate(model, GenerateConfig(messages=tuple(p["messages"]), max_tokens=4, temperature=0)).text
               for p in prompts]
    return sum(WORD in answer.lower() for answer in answers) / len(answers)


def _rlaif_config(model_path, tmp_path, prompts: list[dict], **options) -> TrainConfig:
    """An rlaif run of ``prompts`` judged by ``JUDGE``: short sampled answers, a high learning rate."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in prompts))
    return TrainConfig(model_path=str(model_path), train_file=str(path), output_dir=str(tmp_path / "out"),
                       objective="rlaif", grader=json.dumps(JUDGE), max_completion_length=4, temperature=1.0,
                       learning_rate=3e-3, **options)


def test_the_tuned_policy_shows_the_judges_preference_more_often_than_the_base(tiny_model_path, tmp_path):
    from workers.training import run_training

    prompts = [{"messages": row["messages"][:1]} for row in classification_rows(40, seed=3)]
    train, held_out = prompts[:24], prompts[24:]
    config = _rlaif_config(tiny_model_path, tmp_path, train, num_generations=12, n_epochs=4, batch_size=4, beta=0.1)
    events = []
    result = run_training(config, events.append)
    stored = [e for e in events if isinstance(e, ArtifactSaved) and e.kind == "preferences"]
    assert len(stored) == 1 and result.adapter_dir and result.steps > 0
    pairs = [json.loads(line) for line in open(stored[0].path)]
    assert len(pairs) == stored[0].metrics["pairs"] > 0
    assert stored[0].metrics["pairs"] + stored[0].metrics["ties"] == stored[0].metrics["prompts"] == 24
    assert all(WORD in p["chosen"][0]["content"].lower() and WORD not in p["rejected"][0]["content"].lower()
               for p in pairs)
    assert any("preference pairs" in e.message for e in events if isinstance(e, LogLine))
    base = _share_with_the_property(tiny_model_path, None, held_out)
    tuned = _share_with_the_property(tiny_model_path, result.adapter_dir, held_out)
    assert tuned >= base + 0.25, (base, tuned)  # on prompts it never trained on


def test_a_judge_that_ties_every_answer_leaves_nothing_to_learn_and_says_so(tiny_model_path, tmp_path):
    import pytest

    from workers.training import run_training

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"messages": row["messages"][:1]}) + "\n" for row in classification_rows(2)))
    always = {**JUDGE, "reference": "", "operation": "like"}  # every answer contains ""
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(path), output_dir=str(tmp_path / "out"),
                         objective="rlaif", grader=json.dumps(always), num_generations=2, max_completion_length=2)
    with pytest.raises(ValueError, match="no preference pair"):
        run_training(config, lambda event: None)


def test_a_streamed_rlaif_job_streams_its_pairs_for_its_epochs(tiny_model_path, tmp_path):
    """The prompts' row count says nothing of the pairs (ties are left out): DPO streams the pairs it has."""
    from workers.training import run_training

    prompts = [{"messages": row["messages"][:1]} for row in classification_rows(12, seed=3)]
    config = _rlaif_config(tiny_model_path, tmp_path, prompts, num_generations=4, n_epochs=2, batch_size=2,
                           stream_rows=12)
    events = []
    result = run_training(config, events.append)
    pairs = next(e for e in events if isinstance(e, ArtifactSaved) and e.kind == "preferences").metrics["pairs"]
    assert 0 < pairs < 12  # some prompts tied
    assert any(f"streaming its {pairs:,} rows" in e.message for e in events if isinstance(e, LogLine))
    assert result.steps == -(-2 * pairs // 2)  # two passes over the pairs, two a step
