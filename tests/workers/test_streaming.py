"""Datasets bigger than memory: the trainer streams its rows from the file (``stream_rows``).

Each run here is a fresh process running the engine (no Django), as a worker's training does."""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from stream_memory import peak_growth, rows_write  # noqa: E402  (the benchmark's measured run)

MiB = 2**20

# A streamed run that prints its events, and the rows each step trains on ("row <n>:" in each text).
RECORDING_RUN = """
import json, re, sys
from dataclasses import asdict
import trl
from workers.config import TrainConfig
from workers.training import run_training

order = json.loads(sys.argv[1])
log = open(order["log"], "a")
train_step = trl.SFTTrainer.training_step

def recorded(self, model, inputs, num_items_in_batch=None):
    # padding-free batches are one sequence of all their rows
    text = " ".join(self.processing_class.batch_decode(inputs["input_ids"]))
    rows = [int(number) for number in re.findall(r"row (\\d+)", text)]
    log.write(json.dumps({"step": self.state.global_step + 1, "rows": rows}) + "\\n")
    log.flush()
    return train_step(self, model, inputs, num_items_in_batch)

trl.SFTTrainer.training_step = recorded
emit = lambda event: print("EVENT", json.dumps({"event": type(event).__name__, **asdict(event)}), flush=True)
run_training(TrainConfig(**order["config"]), emit)
"""


def _recording_run(config: dict, log: Path) -> subprocess.Popen:
    order = json.dumps({"config": config, "log": str(log)})
    return subprocess.Popen([sys.executable, "-c", RECORDING_RUN, order], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _event(line: str) -> dict:
    return json.loads(line.removeprefix("EVENT ")) if line.startswith("EVENT ") else {}


def _steps(log: Path) -> dict[int, list[int]]:
    return {entry["step"]: entry["rows"] for entry in map(json.loads, log.read_text().splitlines())}


def test_killed_streamed_run_resumes_at_the_exact_row(tiny_model_path, tmp_path):
    train = rows_write(tmp_path / "train.jsonl", 24)  # 2 passes of 6 steps of 4 rows
    config = dict(model_path=str(tiny_model_path), train_file=str(train), n_epochs=2, batch_size=4,
                  max_length=16, learning_rate=1e-3, save_steps=4, stream_rows=24)
    first = _recording_run({**config, "output_dir": str(tmp_path / "first")}, tmp_path / "first.log")
    checkpoint = None
    for line in first.stdout:  # kill -9 two steps after the checkpoint of step 8, in the second pass
        event = _event(line)
        if event.get("event") == "ArtifactSaved" and event["kind"] == "checkpoint":
            checkpoint = event
        if checkpoint and checkpoint["step"] == 8 and event.get("event") == "Progress" and event["step"] >= 10:
            first.send_signal(signal.SIGKILL)
            break
    assert first.wait(timeout=60) == -signal.SIGKILL
    killed = _steps(tmp_path / "first.log")
    assert checkpoint["step"] == 8 and max(killed) >= 10

    second = _recording_run({**config, "output_dir": str(tmp_path / "second"), "resume_from": checkpoint["path"]},
                            tmp_path / "second.log")
    events = [_event(line) for line in second.stdout if line.startswith("EVENT ")]
    assert second.wait(timeout=300) == 0
    resumed = _steps(tmp_path / "second.log")
    assert min(resumed) == 9 and max(resumed) == 12
    # the resumed run reads the rows the killed one read after its checkpoint, in the same order
    assert [resumed[step] for step in range(9, max(killed) + 1)] == [killed[step] for step in range(9, max(killed) + 1)]
    # as kept (steps to the checkpoint, then the resumed ones): every row trained once a pass
    kept = [row for step in range(1, 9) for row in killed[step]] + [row for rows in resumed.values() for row in rows]
    assert Counter(kept) == {row: 2 for row in range(24)}
    assert [e["step"] for e in events if e["event"] == "Progress"] == [9, 10, 11, 12]


# four fresh trainer processes: ~2 minutes on an idle 2-core machine, far more on a shared one
@pytest.mark.timeout(1800)
def test_streamed_run_memory_stays_flat_where_loading_grows_with_the_file(tiny_model_path, tmp_path):
    budget = 4 * MiB  # what the trainer may grow by with the dataset: the large file is 4 times that
    small, large = 1000, 4000  # 4x apart, both past the shuffle buffer: ~4 and ~16 MB of text
    files = {rows: rows_write(tmp_path / f"train-{rows}.jsonl", rows) for rows in (small, large)}
    assert files[large].stat().st_size > 3.5 * budget

    def growth(rows: int, *, stream: bool) -> int:
        # loading reads and tokenizes every row before the first step: one step shows its peak
        measured = peak_growth(tiny_model_path, files[rows], rows, stream=stream, workdir=tmp_path,
                               steps=0 if stream else 1, batch_size=100)
        if stream:  # the streamed run went through the whole file
            assert measured["steps"] == rows // 100
        return measured["growth"]

    loaded = {rows: growth(rows, stream=False) for rows in (small, large)}
    streamed = {rows: growth(rows, stream=True) for rows in (small, large)}
    figures = f"peak RSS growth (MiB) in memory {[v / MiB for v in loaded.values()]}, " \
              f"streamed {[v / MiB for v in streamed.values()]}"
    print(figures)
    assert loaded[large] - loaded[small] > 4 * budget, figures  # the baseline: memory follows the file
    # streamed: flat beside it. Not to the MiB: RSS moves by tens of MiB between runs of more steps (the
    # allocator's arenas), seen 0.6 and 19 MiB on one machine, while loading grew by ~150 MiB here.
    assert abs(streamed[large] - streamed[small]) < (loaded[large] - loaded[small]) / 4, figures
    assert streamed[large] < loaded[large] - 4 * budget, figures


PREFERENCE_ROWS = {
    "dpo": lambda i: {"prompt": f"Classify row {i}:", "chosen": " sports", "rejected": " food"},
    "orpo": lambda i: {"prompt": f"Classify row {i}:", "chosen": " sports", "rejected": " food"},
    "kto": lambda i: {"prompt": f"Classify row {i}:", "completion": " sports" if i % 2 else " food",
                      "label": bool(i % 2)},
}


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_preference_runs_stream_their_rows_each_once_a_pass(tiny_model_path, tmp_path, monkeypatch, objective):
    import re

    import trl
    from datasets import IterableDataset

    from workers.config import TrainConfig
    from workers.training import run_training

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(PREFERENCE_ROWS[objective](i)) + "\n" for i in range(8)))
    from trl.experimental.orpo import ORPOTrainer

    trainer_class = {"dpo": trl.DPOTrainer, "orpo": ORPOTrainer, "kto": trl.KTOTrainer}[objective]
    seen, streamed = [], []
    train_step = trainer_class.training_step

    def recorded(self, model, inputs, num_items_in_batch=None):
        streamed.append(isinstance(self.train_dataset, IterableDataset))
        prompts = inputs.get("prompt_input_ids", inputs.get("input_ids"))
        text = " ".join(self.processing_class.batch_decode(prompts))
        seen.extend({int(number) for number in re.findall(r"row (\d+)", text)})  # DPO: chosen and rejected
        return train_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trainer_class, "training_step", recorded)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         objective=objective, n_epochs=2, batch_size=2, learning_rate=3e-3, stream_rows=8)
    result = run_training(config, lambda event: None)
    assert result.steps == 8 and all(streamed) and len(streamed) == 8
    assert Counter(seen) == {row: 2 for row in range(8)}  # two passes, every row once in each


PROMPT_ROWS = lambda i: {"messages": [{"role": "user", "content": f"Classify row {i}:"}], "answer": "sports"}  # noqa: E731
EXACT = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"}


@pytest.mark.parametrize("objective", ["orpo", "reinforcement"])
def test_streamed_run_resumed_from_a_checkpoint_goes_on_at_the_exact_row(tiny_model_path, tmp_path, monkeypatch,
                                                                          objective):
    import re

    import trl
    from trl.experimental.orpo import ORPOTrainer

    from workers.config import TrainConfig
    from workers.training import run_training

    train = tmp_path / "train.jsonl"
    make = PROMPT_ROWS if objective == "reinforcement" else PREFERENCE_ROWS["orpo"]
    train.write_text("".join(json.dumps(make(i)) + "\n" for i in range(8)))
    trainer_class = trl.GRPOTrainer if objective == "reinforcement" else ORPOTrainer
    steps: dict[int, list[int]] = {}
    train_step = trainer_class.training_step

    def recorded(self, model, inputs, num_items_in_batch=None):
        text = json.dumps(inputs) if objective == "reinforcement" else \
            " ".join(self.processing_class.batch_decode(inputs["prompt_input_ids"]))
        steps[self.state.global_step + 1] = sorted({int(number) for number in re.findall(r"row (\d+)", text)})
        return train_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trainer_class, "training_step", recorded)
    extra = {"grader": json.dumps(EXACT), "num_generations": 2, "max_completion_length": 4} \
        if objective == "reinforcement" else {}
    config = dict(model_path=str(tiny_model_path), train_file=str(train), objective=objective, n_epochs=2,
                  batch_size=2, learning_rate=3e-3, save_steps=4, stream_rows=8, **extra)
    run_training(TrainConfig(**config, output_dir=str(tmp_path / "first")), lambda event: None)
    first, steps = steps, {}
    resumed = run_training(TrainConfig(**config, output_dir=str(tmp_path / "second"),
                                       resume_from=str(tmp_path / "first" / "checkpoints" / "checkpoint-4")),
                           lambda event: None)
    assert resumed.steps == 8 and sorted(steps) == [5, 6, 7, 8]
    assert steps == {step: first[step] for step in range(5, 9)}  # the rows the first run read after step 4


def test_reinforcement_runs_stream_their_prompts_each_once_a_pass(tiny_model_path, tmp_path, monkeypatch):
    import re

    import trl
    from datasets import IterableDataset

    from workers.config import TrainConfig
    from workers.training import run_training

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(PROMPT_ROWS(i)) + "\n" for i in range(8)))
    seen, streamed = [], []
    train_step = trl.GRPOTrainer.training_step

    def recorded(self, model, inputs, num_items_in_batch=None):
        streamed.append(isinstance(self.train_dataset, IterableDataset))
        # the step's prompts as read, each sampled num_generations times
        seen.extend({int(number) for number in re.findall(r"row (\d+)", json.dumps(inputs))})
        return train_step(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(trl.GRPOTrainer, "training_step", recorded)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         objective="reinforcement", grader=json.dumps(EXACT), n_epochs=2, batch_size=2,
                         num_generations=2, max_completion_length=4, learning_rate=3e-3, stream_rows=8)
    result = run_training(config, lambda event: None)
    assert result.steps == 8 and all(streamed) and len(streamed) == 8
    assert Counter(seen) == {row: 2 for row in range(8)}  # two passes, every prompt once in each
