"""The engine on the tiny local model, on CPU, without Django."""

import json
from pathlib import Path

import pytest

from workers.config import TrainConfig
from workers.events import ArtifactSaved, Metric, Progress
from workers.sample_data import classification_rows, classification_write, tool_call_row
from workers.tiny_model import PARAMETERS, tiny_model_build


def _config(tiny_model_path, tmp_path, **overrides) -> TrainConfig:
    train = classification_write(tmp_path / "train.jsonl", 24, chat=overrides.pop("chat", True))
    values = dict(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                  n_epochs=2, batch_size=8, learning_rate=3e-3)
    return TrainConfig(**{**values, **overrides})


def _greedy(model, tokenizer, prompt: str) -> str:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_tiny_model_matches_declared_size_and_is_cached(tiny_model_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    stamp = (tiny_model_path / "model.safetensors").stat().st_mtime_ns
    tiny_model_build(tiny_model_path)
    assert (tiny_model_path / "model.safetensors").stat().st_mtime_ns == stamp


def test_lora_run_reports_every_step_and_saves_an_adapter(tiny_model_path, tmp_path):
    events = []
    result = _run(_config(tiny_model_path, tmp_path), events)
    steps = [e.step for e in events if isinstance(e, Metric) and "loss" in e.values]
    assert steps == list(range(1, result.total_steps + 1))
    assert [e.step for e in events if isinstance(e, Progress)] == steps
    assert result.trained_tokens > 0 and result.tokens_per_second > 0
    adapter = Path(result.adapter_dir)
    assert (adapter / "adapter_model.safetensors").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    checkpoints = [e for e in events if isinstance(e, ArtifactSaved) and e.kind == "checkpoint"]
    assert [c.step for c in checkpoints] == [result.total_steps // 2, result.total_steps]


def test_loss_is_only_on_assistant_tokens(tiny_model_path, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from workers.device import device_detect
    from workers.loading import tokenizer_load
    from workers.training import _dataset_load, _sft_args

    config = _config(tiny_model_path, tmp_path)
    tokenizer = tokenizer_load(config.model_path)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(config.model_path),
                         args=_sft_args(config, device_detect(), has_eval=False),
                         train_dataset=_dataset_load(config.train_file, tokenizer), processing_class=tokenizer)
    row = trainer.train_dataset[0]
    labels = [t for t, label in zip(row["input_ids"], trainer.data_collator([row])["labels"][0].tolist(), strict=True)
              if label != -100]
    answer = classification_rows(24)[0]["messages"][1]["content"]
    assert tokenizer.decode(labels) == answer + "<|end|>"


def test_lora_learns_the_training_labels(tiny_model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = _run(_config(tiny_model_path, tmp_path, n_epochs=8), [])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), result.adapter_dir)
    rows = classification_rows(24)[:8]
    prompts = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]
    tuned_right = sum(_greedy(tuned, tokenizer, p) == label for p, label in prompts)
    base_right = sum(_greedy(base, tokenizer, p) == label for p, label in prompts)
    assert base_right == 0
    assert tuned_right >= 6


def test_prompt_completion_rows_train(tiny_model_path, tmp_path):
    events = []
    result = _run(_config(tiny_model_path, tmp_path, chat=False, n_epochs=1), events)
    assert result.steps == 3 and Path(result.adapter_dir, "adapter_model.safetensors").exists()


def test_text_rows_train_for_continued_pretraining(tiny_model_path, tmp_path):
    rows = [{"text": f"The weather today brings rain number {i}."} for i in range(16)]
    train = tmp_path / "text.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tiny_model_path, tmp_path, n_epochs=1)
    result = _run(TrainConfig(**{**config.__dict__, "train_file": str(train)}), [])
    assert result.steps == 2 and result.trained_tokens > 0


def test_full_fine_tuning_saves_whole_model(tiny_model_path, tmp_path):
    result = _run(_config(tiny_model_path, tmp_path, adapter="full", n_epochs=1, learning_rate=1e-4), [])
    assert Path(result.adapter_dir, "model.safetensors").exists()


def test_should_stop_ends_the_run_after_one_step(tiny_model_path, tmp_path):
    events = []
    result = _run(_config(tiny_model_path, tmp_path), events, should_stop=lambda: True)
    assert result.stopped and result.steps == 1 and result.adapter_dir == ""
    assert not any(isinstance(e, ArtifactSaved) for e in events)


def test_bad_config_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="n_epochs"):
        TrainConfig(model_path="x", train_file="y", output_dir=str(tmp_path), n_epochs=0)
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(model_path="x", train_file="y", output_dir=str(tmp_path), objective="sft")


def _run(config, events, **kwargs):
    from workers.training import run_training

    return run_training(config, events.append, **kwargs)


def test_cpu_runs_in_fp32_without_checkpointing_and_gpu_uses_its_precision(tmp_path):
    from workers.device import DeviceInfo
    from workers.training import _sft_args, device_settings

    config = TrainConfig(model_path="m", train_file="t", output_dir=str(tmp_path))
    cpu = _sft_args(config, DeviceInfo("cpu", 0), has_eval=False)
    assert (cpu.bf16, cpu.fp16, cpu.gradient_checkpointing, cpu.use_cpu) == (False, False, False, True)
    ampere = device_settings(DeviceInfo("cuda", 1, ("A100",), 80 * 2**30, bf16=True, fp16=True))
    assert (ampere["bf16"], ampere["fp16"], ampere["use_cpu"]) == (True, False, False)
    turing = device_settings(DeviceInfo("cuda", 1, ("T4",), 16 * 2**30, bf16=False, fp16=True))
    assert (turing["bf16"], turing["fp16"]) == (False, True)


def test_liger_fused_kernels_only_on_cuda_where_installed(monkeypatch):
    import importlib.util

    from workers.device import DeviceInfo
    from workers.training import device_settings

    gpu = DeviceInfo("cuda", 1, ("H100",), 80 * 2**30, bf16=True, fp16=True)
    find_spec = importlib.util.find_spec

    def liger(installed: bool):  # whether liger-kernel is installed, whatever this machine has
        return lambda name: (object() if installed else None) if name == "liger_kernel" else find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", liger(False))
    assert importlib.util.find_spec("liger_kernel") is None and not device_settings(gpu)["use_liger_kernel"]
    monkeypatch.setattr(importlib.util, "find_spec", liger(True))
    assert device_settings(gpu)["use_liger_kernel"]
    assert not device_settings(DeviceInfo("cpu", 0))["use_liger_kernel"]


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_qlora_trains_an_adapter_on_a_quantized_base(tiny_model_path, tmp_path, quantization):
    events = []
    result = _run(_config(tiny_model_path, tmp_path, adapter="qlora", quantization=quantization, n_epochs=1), events)
    assert Path(result.adapter_dir, "adapter_model.safetensors").exists()
    losses = [e.values["loss"] for e in events if isinstance(e, Metric) and "loss" in e.values]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)


# --- the template the trainer uses is exactly what the dry run shows ----------------------------

LONG_CHAT = {"messages": [{"role": "system", "content": "Answer with one word."},
                          {"role": "user", "content": "Classify: the band played a loud song at the concert"},
                          {"role": "assistant", "content": "music"},
                          {"role": "user", "content": "And: it will rain tomorrow with strong wind and clouds"},
                          {"role": "assistant", "content": "weather"}]}


def _rows_for(fmt: str) -> list[dict]:
    if fmt == "text":
        return [{"text": f"The weather today brings rain number {i}."} for i in range(6)]
    rows = classification_rows(6, chat=fmt == "chat")
    return rows + [LONG_CHAT, tool_call_row()] if fmt == "chat" else rows


@pytest.mark.parametrize(("fmt", "template"), [("chat", ""), ("chat", "chatml"), ("chat", "llama3"),
                                               ("chat", "mistral"), ("chat", "alpaca"), ("chat", "completion"),
                                               ("prompt_completion", ""), ("text", "")])
def test_trainer_tokenizes_rows_exactly_as_render_shows_them(tiny_model_path, tmp_path, fmt, template):
    from transformers import AutoTokenizer

    from workers.device import device_detect
    from workers.events import emit_nothing
    from workers.templates import render, tokenizer_prepare
    from workers.training import _callback_make, trainer_build

    rows = _rows_for(fmt)
    train = tmp_path / "rows.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    max_length = 40  # the long conversations are cut: truncation must match too
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         template=template, max_length=max_length)
    trainer = trainer_build(config, device_detect(), _callback_make(emit_nothing, lambda: False))
    tokenizer = tokenizer_prepare(AutoTokenizer.from_pretrained(tiny_model_path), template)
    shown = [render(tokenizer, row, fmt, template=template, max_length=max_length) for row in rows]
    assert any(r.truncated for r in shown) or fmt != "chat"
    trained = [(row["input_ids"], [int(label != -100) for label in row["labels"]]) for row in trainer.train_dataset]
    assert trained == [(r.ids, r.loss_mask) for r in shown if r.trainable]


@pytest.mark.parametrize(("template", "max_length"), [("", 40), ("chatml", 120)])  # the long chat is cut
def test_padding_free_batches_carry_the_loss_mask_render_shows(tiny_model_path, tmp_path, template, max_length):
    """The collator joins a batch's rows into one sequence; cut at each row's start (position 0), every
    row's labels are its render's loss mask (a row's first token is never a target either way), and the
    loss equals the padded batch's: each row attends only to itself."""
    import torch
    from transformers import AutoTokenizer

    from workers.device import device_detect
    from workers.events import emit_nothing
    from workers.templates import render, tokenizer_prepare
    from workers.training import _callback_make, trainer_build

    rows = [LONG_CHAT, *classification_rows(2, chat=True)]
    train = tmp_path / "rows.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    built = {}
    for padding_free in (True, False):
        config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), template=template,
                             output_dir=str(tmp_path / f"out-{padding_free}"), max_length=max_length, batch_size=3,
                             padding_free=padding_free)
        built[padding_free] = trainer_build(config, device_detect(), _callback_make(emit_nothing, lambda: False))
    trainer = built[True]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    starts = [*(batch["position_ids"][0] == 0).nonzero().flatten().tolist(), batch["input_ids"].shape[1]]
    tokenizer = tokenizer_prepare(AutoTokenizer.from_pretrained(tiny_model_path), template)
    shown = [render(tokenizer, row, "chat", template=template, max_length=max_length) for row in rows]
    assert any(r.truncated for r in shown)
    for row, start, end in zip(shown, starts[:-1], starts[1:], strict=True):
        assert batch["input_ids"][0, start:end].tolist() == row.ids
        assert [int(label != -100) for label in batch["labels"][0, start:end]] == [0, *row.loss_mask[1:]]
    padded = built[False].data_collator([built[False].train_dataset[i] for i in range(len(rows))])
    model = trainer.model.eval()
    with torch.no_grad():
        joined, apart = (model(**{k: v for k, v in b.items() if k in ("input_ids", "labels", "position_ids",
                                                                          "attention_mask")}).loss
                         for b in (batch, padded))
    assert torch.isclose(joined, apart, rtol=1e-4)


def test_savers_reach_every_objective_trainer_config(tmp_path):
    from workers.device import DeviceInfo
    from workers.training import _common_args, _sft_args

    cpu = DeviceInfo("cpu", 0)
    config = TrainConfig(model_path="m", train_file="t", output_dir=str(tmp_path), gradient_accumulation_steps=4,
                         gradient_checkpointing=True, padding_free=False)
    common = _common_args(config, cpu, has_eval=False)
    assert (common["activation_checkpointing"], common["gradient_accumulation_steps"]) == (True, 4)
    sft = _sft_args(config, cpu, has_eval=False)
    assert (sft.gradient_checkpointing, sft.gradient_accumulation_steps, sft.padding_free) == (True, 4, False)
    assert sft.max_length == config.max_length
    free = _sft_args(TrainConfig(model_path="m", train_file="t", output_dir=str(tmp_path)), cpu, has_eval=False)
    assert (free.padding_free, free.max_length, free.gradient_checkpointing) == (True, None, False)


@pytest.mark.parametrize("template", ["", "chatml", "completion"])
def test_tool_calls_are_trained_with_the_function_name_and_arguments(tiny_model_path, tmp_path, template):
    from workers.device import device_detect
    from workers.events import emit_nothing
    from workers.training import _callback_make, trainer_build

    train = tmp_path / "rows.jsonl"
    train.write_text(json.dumps(tool_call_row("Lyon")) + "\n")
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         template=template)
    trainer = trainer_build(config, device_detect(), _callback_make(emit_nothing, lambda: False))
    row = trainer.train_dataset[0]
    learned = trainer.processing_class.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True)
                                               if label != -100])
    assert "get_weather" in learned and '"city": "Lyon"' in learned  # the call carries loss
    assert "It is sunny in Lyon." in learned
    if template != "completion":  # the offered tools are read, not learned
        assert '"required"' in trainer.processing_class.decode(row["input_ids"]) and '"required"' not in learned


def test_saved_tokenizer_carries_the_chosen_template(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    from workers.templates import COMPLETION_CHAT_TEMPLATE

    result = _run(_config(tiny_model_path, tmp_path, n_epochs=1, template="completion"), [])
    saved = AutoTokenizer.from_pretrained(result.adapter_dir)
    assert saved.chat_template == COMPLETION_CHAT_TEMPLATE
    prompt = saved.apply_chat_template([{"role": "user", "content": "Classify: rain"}], tokenize=False,
                                       add_generation_prompt=True)
    assert prompt == "Classify: rain\n"  # the prompt the completion rows were trained with


def test_unknown_template_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="template"):
        TrainConfig(model_path="x", train_file="y", output_dir=str(tmp_path), template="vicuna")


def _rows_write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _judged_config(tiny_model_path, tmp_path, objective: str, rows: list[dict], **overrides) -> TrainConfig:
    return TrainConfig(model_path=str(tiny_model_path), train_file=str(_rows_write(tmp_path / "train.jsonl", rows)),
                       output_dir=str(tmp_path / "out"), objective=objective, n_epochs=1, batch_size=2,
                       learning_rate=3e-3, **overrides)


def test_orpo_learns_the_chosen_answers_without_a_reference(tiny_model_path, tmp_path):
    pairs = [{"prompt": f"Classify: The team won match {i}.", "chosen": " sports", "rejected": " food"}
             for i in range(8)]
    events = []
    result = _run(_judged_config(tiny_model_path, tmp_path, "orpo", pairs, odds_ratio_weight=0.2), events)
    logged = [e.values for e in events if isinstance(e, Metric) and "loss" in e.values]
    assert len(logged) == result.steps == 4 and Path(result.adapter_dir, "adapter_model.safetensors").exists()
    assert logged[-1]["nll_loss"] < logged[0]["nll_loss"] and logged[-1]["rewards/margins"] > 0


def test_kto_trains_on_answers_marked_good_or_bad(tiny_model_path, tmp_path):
    marked = [{"prompt": f"Classify: The team won match {i}.", "completion": " sports" if i % 2 else " food",
               "label": bool(i % 2)} for i in range(8)]
    events = []
    result = _run(_judged_config(tiny_model_path, tmp_path, "kto", marked, beta=0.2), events)
    margins = [e.values["rewards/margins"] for e in events if isinstance(e, Metric) and "rewards/margins" in e.values]
    assert result.steps == 4 and margins[-1] > margins[0] and result.adapter_dir


def test_reinforcement_samples_grades_and_logs_the_reward_each_step(tiny_model_path, tmp_path):
    prompts = [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}], "answer": "sports"}
               for i in range(4)]
    grader = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
    events = []
    result = _run(_judged_config(tiny_model_path, tmp_path, "reinforcement", prompts, grader=json.dumps(grader),
                                 num_generations=2, max_completion_length=8), events)
    logged = [e.values for e in events if isinstance(e, Metric) and "loss" in e.values]
    assert result.steps == 2 and len(logged) == 2 and result.adapter_dir
    assert all(0 <= values["reward"] <= 1 and "rewards/close/mean" in values for values in logged)


JUDGED_ROWS = {
    **{objective: [{"prompt": f"Classify: The team won match {i}.", "chosen": " sports", "rejected": " food"}
                   for i in range(8)] for objective in ("dpo", "orpo")},
    "kto": [{"prompt": f"Classify: The team won match {i}.", "completion": " sports" if i % 2 else " food",
             "label": bool(i % 2)} for i in range(8)],
    "reinforcement": [{"messages": [{"role": "user", "content": f"Classify: The team won match {i}."}],
                       "answer": "sports"} for i in range(6)],
}
EXACT = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto", "reinforcement"])
def test_each_objective_measures_a_pace_that_estimates_its_own_run(tiny_model_path, tmp_path, objective):
    """ORPO's trainer counts no tokens by itself: without our count its pace was 0 and the estimate
    fell back to 1 token/s. Every objective's run must measure a pace whose estimate of that same run's
    steps is of the right size (tokens counted as the trainer reads them; reinforcement by steps)."""
    from workers.estimate import Schedule, estimate, throughput_of, token_counts

    extra = {"grader": json.dumps(EXACT), "num_generations": 2, "max_completion_length": 8} \
        if objective == "reinforcement" else {}
    config = _judged_config(tiny_model_path, tmp_path, objective, JUDGED_ROWS[objective], **extra)
    result = _run(config, [])
    assert result.trained_tokens > 0 and result.step_tokens_per_second > 0 and result.step_seconds > 0
    throughput = throughput_of(result, eval_tokens=0)
    counts = token_counts(config.model_path, config.train_file, config.max_length)
    schedule = Schedule(n_epochs=1, batch_size=config.batch_size, by_steps=objective == "reinforcement")
    planned = estimate(counts, throughput, schedule)
    steps_took = result.step_seconds * result.steps
    assert planned.steps == result.steps
    assert steps_took / 3 < planned.parts["training"] < steps_took * 3, (planned.parts, steps_took)


def test_estimate_paces_by_steps_when_tokens_give_none_and_refuses_no_pace():
    from workers.estimate import Schedule, Throughput, TokenCounts, estimate

    counts = TokenCounts(rows=16, tokens=1600, trainable=400, truncated_rows=0)
    schedule = Schedule(n_epochs=2, batch_size=4)
    by_tokens = estimate(counts, Throughput(tokens_per_second=100.0, peak_memory_bytes=1, step_seconds=9.0), schedule)
    assert by_tokens.parts["training"] == 32.0  # 3200 tokens at 100/s
    untimed_tokens = estimate(counts, Throughput(tokens_per_second=0.0, peak_memory_bytes=1, step_seconds=0.5),
                              schedule)
    assert untimed_tokens.parts["training"] == 4.0  # 8 steps at 0.5 s, never 3200 s at "1 token/s"
    sampled = estimate(counts, Throughput(tokens_per_second=100.0, peak_memory_bytes=1, step_seconds=2.0),
                       Schedule(n_epochs=2, batch_size=4, by_steps=True))
    assert sampled.parts["training"] == 16.0
    with pytest.raises(ValueError, match="no pace"):
        estimate(counts, Throughput(tokens_per_second=0.0, peak_memory_bytes=1), schedule)


def test_gradient_accumulation_steps_as_the_schedule_counts_them(tiny_model_path, tmp_path):
    from workers.estimate import Schedule

    events = []
    config = _config(tiny_model_path, tmp_path, n_epochs=1, batch_size=4, gradient_accumulation_steps=4)
    result = _run(config, events)  # 24 rows: 6 batches, an optimizer step every 4 (the last after 2)
    schedule = Schedule(n_epochs=1, batch_size=4, gradient_accumulation_steps=4)
    assert result.steps == result.total_steps == schedule.steps(24) == 2
    assert Schedule(n_epochs=3, batch_size=4).steps(24) == 18


def test_schedule_counts_the_passes_and_checkpoints_the_trainer_makes(tiny_model_path, tmp_path):
    """Every eval_steps and save_steps, plus one at the end when the last step is not on the beat:
    the estimate and the live ETA count the same passes and checkpoints as the run."""
    from workers.estimate import Schedule

    validation = classification_write(tmp_path / "valid.jsonl", 4, seed=1)
    config = _config(tiny_model_path, tmp_path, n_epochs=1, batch_size=4, eval_steps=4, save_steps=4,
                     validation_file=str(validation))
    result = _run(config, [])  # 24 rows: 6 steps; passes and checkpoints after steps 4 and 6
    schedule = Schedule(n_epochs=1, batch_size=4, eval_steps=4, save_steps=4, validation_tokens=1)
    assert (result.evals, result.saves) == (schedule.evals(6), schedule.saves(6)) == (2, 2)
    assert (Schedule(n_epochs=1, batch_size=4, eval_steps=3, save_steps=3, validation_tokens=1).evals(6),
            Schedule(n_epochs=1, batch_size=4, eval_steps=3, save_steps=3).saves(6)) == (2, 2)


def test_finishing_prior_grows_with_the_bytes_a_run_saves():
    """Before a model has a measured finish: the tiny model's adapter is a tenth of a second; a 7B full
    fine-tune writes ~27 GB, minutes."""
    from workers.estimate import Shape, finishing_seconds
    from workers.tiny_model import CONFIG, PARAMETERS

    tiny = Shape(CONFIG["hidden_size"], CONFIG["num_hidden_layers"], CONFIG["intermediate_size"], CONFIG["vocab_size"])
    lora = finishing_seconds(parameters=PARAMETERS, shape=tiny, adapter="lora")
    full = finishing_seconds(parameters=PARAMETERS, shape=tiny, adapter="full")
    assert 0.1 < lora < full < 0.5
    big = finishing_seconds(parameters=6_738_415_616, shape=Shape(4096, 32, 11008, 32000), adapter="full")
    assert 200 < big < 400


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the per-run peak RSS needs Linux's /proc")
def test_cpu_run_reports_its_own_peak_memory_not_an_earlier_larger_runs(tiny_model_path, tmp_path):
    """A worker process runs job after job: each reports the memory it added, as the CPU estimate predicts."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": "row " + "the model learns " * 200}) + "\n" for _ in range(32)))

    def peak(name: str, **options) -> int:
        config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / name),
                             n_epochs=1, learning_rate=1e-4, **options)
        return _run(config, []).peak_memory_bytes

    large = peak("large", adapter="full", batch_size=16, max_length=512)
    small = peak("small", batch_size=2, max_length=32)
    assert large > 200 * 2**20 and 0 < small < large / 4  # the process's own peak would be the larger one
