"""Benchmark the streaming validation: MB/s and peak RSS on a generated JSONL file.

    .venv/bin/python benchmarks/dataset_validate.py            # 1 GiB of chat rows
    .venv/bin/python benchmarks/dataset_validate.py --mb 100   # a quicker run

Generates the file in a temporary directory (deleted afterwards), then runs the same
``workers.validate.run_validation`` the Celery task runs, in a fresh process, so the peak RSS
printed is the validator's own. Target: >= 50 MB/s per core, peak RSS <= 200 MB.
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model learns from examples and every answer should be short clear and correct when the "
         "user asks about weather music food sports travel history science code").split()


def generate(path: Path, megabytes: int, seed: int = 0) -> int:
    """Write ~``megabytes`` MB of chat rows (system/user/assistant, ~600 bytes each); return rows."""
    rng = random.Random(seed)
    target, written, rows = megabytes * 1_000_000, 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            block = []
            for _ in range(1000):
                row = {"messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))},
                    {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(20, 100)))},
                ]}
                block.append(json.dumps(row))
            text = "\n".join(block) + "\n"
            handle.write(text)
            written += len(text)
            rows += len(block)
    return rows


def measure(path: str) -> None:
    """Run in the child process: validate, then print one JSON line of figures."""
    sys.path.insert(0, str(ROOT))
    from workers.validate import ValidateConfig, run_validation

    started_cpu, started = time.process_time(), time.perf_counter()
    result = run_validation(ValidateConfig(path=path, filename="bench.jsonl"))
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ok": result.ok, "rows": result.rows, "bytes": result.bytes, "wall_s": wall, "cpu_s": cpu,
                      "peak_rss": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1074, help="size of the generated file in MB (default 1 GiB)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure)
    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as tmp:
        path = Path(tmp) / "bench.jsonl"
        started = time.perf_counter()
        rows = generate(path, args.mb)
        print(f"generated {path.stat().st_size / 1e6:.0f} MB, {rows} rows in {time.perf_counter() - started:.0f}s")
        child = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True,
                               check=True)
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    megabytes = figures["bytes"] / 1e6
    print(f"validated {figures['rows']} rows, {megabytes:.0f} MB, ok={figures['ok']}")
    print(f"wall {figures['wall_s']:.1f}s  cpu {figures['cpu_s']:.1f}s")
    per_core = megabytes / figures["cpu_s"]
    print(f"throughput {megabytes / figures['wall_s']:.1f} MB/s wall, {per_core:.1f} MB/s per core (CPU time)")
    print(f"peak RSS {figures['peak_rss'] / 2**20:.0f} MiB")
    target_ok = megabytes / figures["cpu_s"] >= 50 and figures["peak_rss"] <= 200 * 2**20
    print("target (>= 50 MB/s per core, RSS <= 200 MB):", "met" if target_ok else "NOT met")


if __name__ == "__main__":
    main()
