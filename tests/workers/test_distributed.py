"""torchrun with two CPU processes (gloo): the data is split across ranks, rank 0 reports."""

import json
from pathlib import Path

from workers.config import TrainConfig
from workers.distributed import run_distributed
from workers.events import ArtifactSaved, Metric
from workers.sample_data import classification_write


def test_two_processes_split_the_batches_and_save_one_adapter(tiny_model_path, tmp_path):
    train = classification_write(tmp_path / "train.jsonl", 24)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         n_epochs=2, batch_size=4, learning_rate=3e-3, lora_target_modules=["q_proj", "v_proj"],
                         devices=2)
    events = []
    result = run_distributed(config, events.append)
    # 24 rows / (4 rows x 2 ranks) = 3 steps per epoch; one process would need 6.
    assert (result.steps, result.total_steps) == (6, 6)
    assert [e.step for e in events if isinstance(e, Metric) and "loss" in e.values] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events if isinstance(e, ArtifactSaved) and e.kind == "checkpoint"] == [3, 6]
    assert Path(result.adapter_dir, "adapter_model.safetensors").exists()
    # the config crossed to the ranks as JSON and came back whole: only the named modules were adapted
    adapted = json.loads(Path(result.adapter_dir, "adapter_config.json").read_text())["target_modules"]
    assert sorted(adapted) == ["q_proj", "v_proj"]


def test_stop_request_reaches_every_rank(tiny_model_path, tmp_path):
    train = classification_write(tmp_path / "train.jsonl", 24)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         n_epochs=50, batch_size=4, devices=2)
    result = run_distributed(config, lambda event: None, should_stop=lambda: True)
    assert result.stopped and result.steps < 150 and result.adapter_dir == ""
