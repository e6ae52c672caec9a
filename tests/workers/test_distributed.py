"""torchrun with two CPU processes (gloo): the data is split across ranks, rank 0 reports; with
``sharding="fsdp"`` (or DeepSpeed's "zero3") each rank holds half of the weights, and a sharded
checkpoint resumes."""

import json
import os
import signal
from pathlib import Path

import pytest

from workers.config import TrainConfig
from workers.distributed import run_distributed
from workers.events import ArtifactSaved, LogLine, Metric, Progress
from workers.loading import model_load
from workers.sample_data import classification_write
from workers.tiny_model import PARAMETERS


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
    # not sharded: each rank holds the whole model (base and adapter)
    assert result.rank_parameters[0] == result.rank_parameters[1] > PARAMETERS
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


def _losses(events) -> dict[int, float]:
    return {e.step: e.values["loss"] for e in events if isinstance(e, Metric) and "loss" in e.values}


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_fsdp_gives_each_rank_half_of_the_weights_and_saves_the_whole_model(tiny_model_path, tmp_path, adapter):
    train = classification_write(tmp_path / "train.jsonl", 16)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         adapter=adapter, n_epochs=1, batch_size=2, learning_rate=3e-3, devices=2, sharding="fsdp")
    events = []
    result = run_distributed(config, events.append)
    held = result.rank_parameters
    assert len(held) == 2 and sum(held) >= PARAMETERS  # the base's weights (and LoRA's), split, not copied
    assert all(0.4 < part / sum(held) < 0.6 for part in held), held
    if adapter == "full":
        assert sum(held) == PARAMETERS
    assert any(isinstance(e, LogLine) and e.message.startswith("Parameters held per rank: ") for e in events)
    # the final save gathers the shards: an ordinary model (or adapter) that loads whole and has learned
    tuned = _learned_whole(tiny_model_path, result.adapter_dir, events)
    # the last checkpoint holds its weights in one part per rank (to resume from) and loads as a model too
    # (inference, evaluation): full fine-tuning's parts are read in one process, LoRA's adapter is gathered
    checkpoint = [e.path for e in events if isinstance(e, ArtifactSaved) and e.kind == "checkpoint"][-1]
    assert len(list(Path(checkpoint, "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    saved = model_load(str(tiny_model_path), adapter_path=checkpoint, merged=True).state_dict()
    assert all(saved[name].equal(tuned[name]) for name in tuned)  # taken at the last step


@pytest.mark.parametrize(("sharding", "adapter"), [("zero2", "lora"), ("zero3", "full")])
def test_deepspeed_zero_trains_on_two_cpu_ranks_and_zero3_gives_each_half_of_the_weights(tiny_model_path, tmp_path,
                                                                                         sharding, adapter):
    pytest.importorskip("deepspeed")
    train = classification_write(tmp_path / "train.jsonl", 16)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp_path / "out"),
                         adapter=adapter, n_epochs=1, batch_size=2, learning_rate=3e-3, devices=2, sharding=sharding)
    events = []
    result = run_distributed(config, events.append)
    held = result.rank_parameters
    if sharding == "zero3":  # ZeRO-3 partitions the weights: each rank holds half of them
        assert held == (PARAMETERS // 2, PARAMETERS // 2), held
    else:  # ZeRO-2 partitions the gradients and optimizer state only: each rank holds every weight
        assert held[0] == held[1] > PARAMETERS
    # the final save is an ordinary model (ZeRO-3 gathers its parts) or adapter that loads whole and has learned
    _learned_whole(tiny_model_path, result.adapter_dir, events)


def _learned_whole(tiny_model_path, saved: str, events) -> dict:
    """The weights saved at ``saved`` (merged into the base): the base's names and shapes, some of them
    changed, after four steps whose loss fell."""
    losses = _losses(events)
    assert list(losses) == [1, 2, 3, 4] and losses[4] < losses[1]
    base = model_load(str(tiny_model_path)).state_dict()
    tuned = model_load(str(tiny_model_path), adapter_path=saved, merged=True).state_dict()
    assert {name: t.shape for name, t in tuned.items()} == {name: t.shape for name, t in base.items()}
    assert any(not tuned[name].equal(base[name]) for name in base)
    return tuned


def _rank_pids(config_path: Path) -> list[int]:
    """The training processes torchrun started for ``config_path`` (not torchrun itself)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            command = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except (NotADirectoryError, FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if str(config_path).encode() in command and b"torch.distributed.run" not in command:
            pids.append(int(entry))
    return pids


# each rank's part of a checkpoint: FSDP's distributed-checkpoint files, DeepSpeed's optimizer partitions
RANK_PARTS = {"fsdp": "pytorch_model_fsdp_0/*.distcp", "zero3": "global_step*/*zero_pp_rank_*_optim_states.pt"}


@pytest.mark.parametrize("sharding", ["fsdp", "zero3"])
def test_sharded_checkpoint_resumes_after_one_rank_is_killed(tiny_model_path, tmp_path, sharding):
    if sharding != "fsdp":
        pytest.importorskip("deepspeed")
    train = classification_write(tmp_path / "train.jsonl", 16)
    options = dict(model_path=str(tiny_model_path), train_file=str(train), n_epochs=2, batch_size=2,
                   learning_rate=3e-3, lora_target_modules=["q_proj", "v_proj"], devices=2, sharding=sharding,
                   save_steps=2)
    config = TrainConfig(output_dir=str(tmp_path / "first"), **options)
    first: list = []

    def kill_a_rank_after_the_first_checkpoint(event) -> None:
        first.append(event)
        if isinstance(event, ArtifactSaved) and event.step == 2:
            os.kill(max(_rank_pids(tmp_path / "first" / "config.json")), signal.SIGKILL)

    with pytest.raises(RuntimeError, match="exited"):
        run_distributed(config, kill_a_rank_after_the_first_checkpoint)
    saved = [e for e in first if isinstance(e, ArtifactSaved)]  # announced once every rank wrote its part
    assert saved and saved[-1].kind == "checkpoint" and saved[-1].step < 8
    step, checkpoint = saved[-1].step, Path(saved[-1].path)
    assert len(list(checkpoint.glob(RANK_PARTS[sharding]))) == 2  # one part per rank

    second: list = []
    result = run_distributed(TrainConfig(output_dir=str(tmp_path / "second"), resume_from=str(checkpoint), **options),
                             second.append)
    assert (result.steps, result.total_steps) == (8, 8) and not result.stopped
    assert [e.step for e in second if isinstance(e, Progress)][0] == step + 1  # on from the checkpoint
    # as the platform keeps them (later steps of the lost attempt are discarded): each step once
    kept = [s for s in _losses(first) if s <= step]
    assert kept + list(_losses(second)) == list(range(1, 9))
    # the weights came back: the loss goes on from where it was, not from the base's
    assert _losses(second)[step + 1] < _losses(first)[1] - 0.2


def test_two_nodes_meet_through_the_c10d_rendezvous_and_one_of_them_reports(tiny_model_path, tmp_path):
    """Two nodes of one process each (as two workers on two hosts would run them): one run of world
    size 2, the batches split across the nodes, and only the node holding global rank 0 has a result."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e import free_port
    from workers.distributed import Rendezvous

    train = classification_write(tmp_path / "train.jsonl", 24)
    endpoint = f"127.0.0.1:{free_port()}"

    def node(index: int):
        config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), n_epochs=2, batch_size=4,
                             output_dir=str(tmp_path / f"node{index}"), learning_rate=3e-3, nodes=2)
        events = []
        result = run_distributed(config, events.append, rendezvous=Rendezvous(endpoint, "two-nodes", index == 0))
        return result, events

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(node, [0, 1]))
    [(result, events)] = [outcome for outcome in outcomes if outcome[0] is not None]
    assert (result.steps, result.total_steps) == (6, 6)  # 24 rows / (4 rows x 2 ranks) x 2 epochs
    assert [e.step for e in events if isinstance(e, Metric) and "loss" in e.values] == [1, 2, 3, 4, 5, 6]
    assert len(result.rank_parameters) == 2
    [(nothing, other_events)] = [outcome for outcome in outcomes if outcome[0] is None]
    assert not any(isinstance(e, Metric) for e in other_events)


def test_a_run_over_nodes_without_a_rendezvous_is_refused(tiny_model_path, tmp_path):
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(tmp_path / "t.jsonl"),
                         output_dir=str(tmp_path / "out"), nodes=2)
    with pytest.raises(ValueError, match="needs their rendezvous"):
        run_distributed(config, lambda event: None)


def _two_nodes(tmp_path: Path, run: str, **options) -> list[tuple]:
    """Both nodes of one run of world size 2 (one process each, as two workers' hosts run them): the
    (result, events) of the node that held global rank 0, then the other's."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e import free_port
    from workers.distributed import Rendezvous

    endpoint = f"127.0.0.1:{free_port()}"

    def node(index: int):
        config = TrainConfig(output_dir=str(tmp_path / run / f"node{index}"), nodes=2, **options)
        events = []
        result = run_distributed(config, events.append, rendezvous=Rendezvous(endpoint, run, index == 0))
        return result, events

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(node, [0, 1]))
    return sorted(outcomes, key=lambda outcome: outcome[0] is None)  # the rendezvous decides who is rank 0


@pytest.mark.parametrize("sharding", ["fsdp", "zero3"])
def test_sharding_over_two_nodes_stores_each_nodes_part_and_resumes_from_both(tiny_model_path, tmp_path, sharding):
    """Sharding over two nodes of one process: each rank holds half of the weights, each node reports
    the checkpoints its own rank wrote (its part), and a run given the parts of both (as each node
    downloads the whole stored checkpoint) resumes on two nodes."""
    import shutil

    if sharding != "fsdp":
        pytest.importorskip("deepspeed")
    train = classification_write(tmp_path / "train.jsonl", 16)
    options = dict(model_path=str(tiny_model_path), train_file=str(train), adapter="full", n_epochs=1, batch_size=2,
                   learning_rate=3e-3, sharding=sharding, save_steps=2)
    (result, events), (nothing, other_events) = _two_nodes(tmp_path, "first", **options)
    assert nothing is None and (result.steps, result.total_steps) == (4, 4)
    assert len(result.rank_parameters) == 2 and sum(result.rank_parameters) == PARAMETERS
    assert all(0.4 < part / PARAMETERS < 0.6 for part in result.rank_parameters), result.rank_parameters
    tuned = _learned_whole(tiny_model_path, result.adapter_dir, events)  # gathered whole, as on one node
    assert all(isinstance(e, ArtifactSaved) and e.kind == "checkpoint" for e in other_events)  # nothing else
    mine = {e.step: Path(e.path) for e in events if isinstance(e, ArtifactSaved) and e.kind == "checkpoint"}
    theirs = {e.step: Path(e.path) for e in other_events}
    assert list(mine) == list(theirs) == [2, 4]
    parts = [[p.name for p in node[2].glob(RANK_PARTS[sharding])] for node in (mine, theirs)]
    assert [len(part) for part in parts] == [1, 1] and parts[0] != parts[1]  # its own rank's part, on its disk
    shared = {p.relative_to(mine[2]) for p in mine[2].rglob("*") if p.is_file()}
    assert not shared & {p.relative_to(theirs[2]) for p in theirs[2].rglob("*") if p.is_file()}  # no file twice

    whole = tmp_path / "stored"  # both parts under one checkpoint, as the platform stores and fetches it
    for part in (mine[2], theirs[2]):
        shutil.copytree(part, whole, dirs_exist_ok=True)
    (again, resumed), _ = _two_nodes(tmp_path, "second", resume_from=str(whole), **options)
    assert (again.steps, [e.step for e in resumed if isinstance(e, Progress)][0]) == (4, 3)  # on from step 2
    assert _losses(resumed)[3] == pytest.approx(_losses(events)[3], abs=1e-4)  # the same weights came back
    assert tuned.keys() == model_load(str(tiny_model_path), adapter_path=again.adapter_dir).state_dict().keys()
