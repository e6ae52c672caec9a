"""One training across several processes with torchrun: one per GPU, or CPU processes over gloo, on
one machine or on several (``nodes``) meeting through torchrun's c10d rendezvous.

``run_distributed`` is called like ``run_training`` on every node; it starts ``torchrun`` and relays
the events that global rank 0 writes (JSON lines) to ``emit``, and ``should_stop`` answers to all
ranks through a stop file. On the other nodes it relays only the checkpoints (``ArtifactSaved``) that
node's ranks wrote: with sharding each node holds its ranks' parts, which its caller stores. Run as
``python -m workers.distributed CONFIG.json`` under torchrun.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from workers.config import Stop, TrainConfig, TrainResult
from workers.events import ArtifactSaved, Emit, LogLine, Metric, Progress

EVENT_TYPES = {cls.__name__: cls for cls in (Progress, Metric, LogLine, ArtifactSaved)}


class NodeLost(RuntimeError):
    """Another node of the job stopped answering: this node's ranks were stopped."""


@dataclasses.dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one run meet: ``endpoint`` (host:port of the first node), a ``run_id`` every
    node of this attempt shares, and whether this node hosts the rendezvous store (the first node)."""

    endpoint: str
    run_id: str
    host: bool


def run_distributed(config: TrainConfig, emit: Emit, should_stop: Callable[[], Stop | bool] = lambda: Stop.NO,
                    rendezvous: Rendezvous | None = None,
                    node_lost: Callable[[], str] = lambda: "") -> TrainResult | None:
    """Train with ``config.devices`` ranks here (and as many on each of ``config.nodes`` nodes); return
    global rank 0's result, or None on a node that did not hold it. ``node_lost`` names a node that
    stopped answering (then this node's ranks are stopped and ``NodeLost`` raised)."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    for name in ("events.jsonl", "result.json", "STOP"):
        (out / name).unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", *_placement(config, rendezvous),
               "--nproc_per_node", str(config.devices), "-m", "workers.distributed", str(config_path)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    offset = 0
    while process.poll() is None:
        offset = _relay(out / "events.jsonl", offset, emit)
        asked = should_stop()
        if asked and not (out / "STOP").exists():
            (out / "STOP").write_text(str(Stop.CHECKPOINT if asked == Stop.CHECKPOINT else Stop.DISCARD))
        lost = node_lost()
        if lost:
            _stop(process)
            raise NodeLost(lost)
        time.sleep(0.2)
    _relay(out / "events.jsonl", offset, emit)
    ranks = config.devices * config.nodes
    if process.returncode != 0:
        raise RuntimeError(f"torchrun with {ranks} processes exited with {process.returncode}")
    if not (out / "result.json").exists():
        if config.nodes > 1:
            return None  # global rank 0 ran on another node: that node reports the result
        raise RuntimeError(f"torchrun with {ranks} processes wrote no result")
    result = json.loads((out / "result.json").read_text())
    return TrainResult(**{**result, "rank_parameters": tuple(result.get("rank_parameters", ()))})


def _placement(config: TrainConfig, rendezvous: Rendezvous | None) -> list[str]:
    """torchrun's arguments for where the ranks are: this machine alone, or ``config.nodes`` machines."""
    if config.nodes == 1:
        return ["--standalone"]
    if rendezvous is None:
        raise ValueError(f"a run over {config.nodes} nodes needs their rendezvous (endpoint and run id)")
    return ["--nnodes", str(config.nodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", rendezvous.endpoint,
            "--rdzv_id", rendezvous.run_id, "--rdzv_conf", f"is_host={str(rendezvous.host).lower()}"]


def _stop(process: subprocess.Popen) -> None:
    """torchrun passes SIGTERM on to its ranks; a rank stuck in a collective is killed after a grace."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _relay(path: Path, offset: int, emit: Emit) -> int:
    if not path.exists():
        return offset
    with open(path) as handle:
        handle.seek(offset)
        for line in handle:
            if not line.endswith("\n"):
                break  # rank 0 is still writing it
            record = json.loads(line)
            emit(EVENT_TYPES[record.pop("event")](**record))
            offset += len(line.encode())
    return offset


def main(config_path: str) -> None:
    from workers.training import run_training

    config = TrainConfig(**json.loads(Path(config_path).read_text()))
    out = Path(config.output_dir)
    rank = int(os.environ.get("RANK", "0"))
    emit = _file_emit(out / "events.jsonl") if rank == 0 else (lambda event: None)
    if rank != 0 and os.environ.get("LOCAL_RANK") == "0":
        emit = _checkpoints_only(_file_emit(out / "events.jsonl"))
    result = run_training(config, emit, should_stop=lambda: _stop_agreed(out / "STOP", rank))
    if rank == 0:
        (out / "result.json").write_text(json.dumps({**dataclasses.asdict(result), "stop": str(result.stop)}))


def _file_emit(path: Path) -> Emit:
    def emit(event) -> None:
        with open(path, "a") as handle:
            handle.write(json.dumps({"event": type(event).__name__, **dataclasses.asdict(event)}) + "\n")
    return emit


def _checkpoints_only(emit: Emit) -> Emit:
    """The first rank of a node without global rank 0 reports the checkpoints its node wrote (after
    every rank's part is written): each node stores its own ranks' parts of a sharded checkpoint."""
    def checkpoints(event) -> None:
        if isinstance(event, ArtifactSaved) and event.kind == "checkpoint":
            emit(event)
    return checkpoints


_STOP_CODES = [Stop.NO, Stop.DISCARD, Stop.CHECKPOINT]


def _stop_agreed(path: Path, rank: int) -> Stop:
    """Rank 0 reads the stop file and every rank learns its answer in the same step (an all-reduce):
    ranks that stopped at different steps would wait on each other's collectives forever."""
    import torch
    import torch.distributed as dist

    asked = Stop(path.read_text()) if rank == 0 and path.exists() else Stop.NO
    if not (dist.is_available() and dist.is_initialized()):
        return asked
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    code = torch.tensor([_STOP_CODES.index(asked)], device=device)
    dist.all_reduce(code, op=dist.ReduceOp.MAX)
    return _STOP_CODES[int(code.item())]


if __name__ == "__main__":
    main(sys.argv[1])
