"""One training across several processes with torchrun: one per GPU, or CPU processes over gloo.

``run_distributed`` is called like ``run_training``; it starts ``torchrun`` and relays the
events that rank 0 writes (JSON lines) to ``emit``, and ``should_stop`` answers to all ranks
through a stop file. Run as ``python -m workers.distributed CONFIG.json`` under torchrun.
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


def run_distributed(config: TrainConfig, emit: Emit,
                    should_stop: Callable[[], Stop | bool] = lambda: Stop.NO) -> TrainResult:
    """Train with ``config.devices`` ranks (torchrun --nproc_per_node); return rank 0's result."""
    processes = config.devices
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    for name in ("events.jsonl", "result.json", "STOP"):
        (out / name).unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "workers.distributed", str(config_path)]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    offset = 0
    while process.poll() is None:
        offset = _relay(out / "events.jsonl", offset, emit)
        asked = should_stop()
        if asked and not (out / "STOP").exists():
            (out / "STOP").write_text(str(Stop.CHECKPOINT if asked == Stop.CHECKPOINT else Stop.DISCARD))
        time.sleep(0.2)
    _relay(out / "events.jsonl", offset, emit)
    if process.returncode != 0 or not (out / "result.json").exists():
        raise RuntimeError(f"torchrun with {processes} processes exited with {process.returncode}")
    result = json.loads((out / "result.json").read_text())
    return TrainResult(**{**result, "rank_parameters": tuple(result.get("rank_parameters", ()))})


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
    result = run_training(config, emit, should_stop=lambda: _stop_agreed(out / "STOP", rank))
    if rank == 0:
        (out / "result.json").write_text(json.dumps({**dataclasses.asdict(result), "stop": str(result.stop)}))


def _file_emit(path: Path) -> Emit:
    def emit(event) -> None:
        with open(path, "a") as handle:
            handle.write(json.dumps({"event": type(event).__name__, **dataclasses.asdict(event)}) + "\n")
    return emit


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
