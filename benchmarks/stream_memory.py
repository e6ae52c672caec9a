"""Peak RSS of the trainer with its rows in memory and streamed from the file, at a few sizes.

    .venv/bin/python benchmarks/stream_memory.py                    # 1,000 / 4,000 / 16,000 rows (4, 16, 64 MB)
    .venv/bin/python benchmarks/stream_memory.py --rows 1000 4000    # quicker

Each run is a fresh process running ``workers.training.run_training`` on the tiny model (CPU),
with rows of ~4 KB of plain text (``max_length`` 16, batch 100, one epoch). A thread samples the
process's RSS with psutil; the growth printed is the peak minus the RSS just before the run
(imports done). The in-memory run stops after its first steps (every row is loaded and
tokenized before the first step, so its peak is there); the streamed run reads the whole file.
The in-memory growth follows the file's size; the streamed one should not.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model learns from examples and every answer should be short clear and correct when the "
         "user asks about weather music food sports travel history science code").split()


def rows_write(path: Path, count: int, *, seed: int = 0) -> Path:
    """``count`` text rows of ~4 KB, each starting "row <n>:" so a batch tells which rows it holds."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(count):
            text = f"row {number}: " + " ".join(rng.choices(WORDS, k=700))
            handle.write(json.dumps({"text": text}) + "\n")
    return path


def peak_growth(model: Path, train: Path, rows: int, *, stream: bool, workdir: Path, steps: int = 0,
                batch_size: int = 100) -> dict:
    """Run the engine in a fresh process; its RSS before the run and peak during it (bytes), and
    the steps it did. ``steps``: stop after that many (0: train to the end)."""
    order = {"model": str(model), "train": str(train), "rows": rows, "stream": stream, "steps": steps,
             "batch_size": batch_size, "output": str(workdir / f"out-{rows}-{int(stream)}")}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(order)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise RuntimeError(f"the measured run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(order: dict) -> None:
    # the libraries are imported before the baseline: the growth is the run's memory, not theirs
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    from workers.config import Stop, TrainConfig
    from workers.training import run_training

    config = TrainConfig(model_path=order["model"], train_file=order["train"], output_dir=order["output"],
                         n_epochs=1, batch_size=order["batch_size"], max_length=16, learning_rate=1e-3,
                         logging_steps=1000,
                         stream_rows=order["rows"] if order["stream"] else 0)
    done = [0]

    def should_stop() -> Stop:
        done[0] += 1
        return Stop.DISCARD if order["steps"] and done[0] >= order["steps"] else Stop.NO

    measured = rss_peak_during(lambda: run_training(config, lambda event: None, should_stop))
    result = measured.pop("result")
    print(json.dumps({**measured, "steps": result.steps}))


def rss_peak_during(work) -> dict:
    """Call ``work()``; this process's RSS before it and its peak during it (bytes, sampled every 5 ms
    by a thread, with psutil), their difference as "growth", and what ``work`` returned as "result"."""
    import psutil

    process, peak, running = psutil.Process(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    baseline = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = work()
    running[0] = False
    sampler.join()
    return {"baseline": baseline, "peak": peak[0], "growth": peak[0] - baseline, "result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        return _child(json.loads(args.child))
    from workers.tiny_model import tiny_model_build

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        model = tiny_model_build(workdir / "tiny")
        print(f"{'rows':>8} {'file MB':>8} {'in memory MB':>13} {'streamed MB':>12} {'streamed s':>11}")
        for rows in args.rows:
            train = rows_write(workdir / f"train-{rows}.jsonl", rows)
            loaded = peak_growth(model, train, rows, stream=False, workdir=workdir, steps=2)
            began = time.perf_counter()
            streamed = peak_growth(model, train, rows, stream=True, workdir=workdir)
            seconds = time.perf_counter() - began
            print(f"{rows:>8} {train.stat().st_size / 1e6:>8.1f} {loaded['growth'] / 2**20:>13.1f} "
                  f"{streamed['growth'] / 2**20:>12.1f} {seconds:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
