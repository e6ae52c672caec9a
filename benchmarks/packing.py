"""The platform's automatic choices against bare TRL without packing, on rows of skewed lengths.

    .venv/bin/python benchmarks/packing.py [--rows 240] [--epochs 1] [--rounds 3] [--threads 1]

Most rows of a real chat data set are short and a few are long (a log-normal length distribution):
padded batches then spend most of their compute on padding. Both sides train the same LoRA on the same
rows with the same batch size, learning rate and seed, in this process, alternating over the rounds:
bare TRL as a user would configure it for CPU without packing (``overhead.bare_trl``: bf16 and
activation checkpointing off, assistant-only loss), and the platform's engine (``run_training``) with
every option left to "auto" (``hyperparameters_resolve``: padding-free batching for a batch above 1,
checkpointing off while the model fits). It prints, per round and as medians, non-padding tokens per
CPU-second of the training loop (from the first logged step to the last) for both, their ratio
(target ≥ 1.5), the final train losses (target: within 2%), and the share of the CPU's measured
matmul peak the platform's run reaches (target ≥ 35%).
"""

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from overhead import ROOT, Mark, bare_trl, matmul_peak_flops, span_rates, threads_pin

HYPER = {"n_epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "lora_r": 16, "lora_alpha": 32}
WORDS = ("the model learns which topic a question belongs to and answers with one word about sport science "
         "music politics weather history cooking travel markets").split()


def skewed_rows(count: int, seed: int = 7) -> list[dict]:
    """Chat rows whose question lengths follow a log-normal law: median ~25 words, a long tail to ~700."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = min(700, max(3, int(rng.lognormvariate(3.2, 0.9))))
        question = " ".join(rng.choice(WORDS) for _ in range(words))
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": rng.choice(WORDS[-7:])}]})
    return rows


def platform_run(model_path: Path, data: Path, out: Path) -> dict:
    from workers.config import TrainConfig
    from workers.events import Metric
    from workers.hyperparameters import Context, hyperparameters_resolve, options_complete
    from workers.training import run_training

    resolved = hyperparameters_resolve(HYPER, Context(context_length=2048))
    config = TrainConfig(model_path=str(model_path), train_file=str(data), output_dir=str(out),
                         **{**options_complete(resolved), "save_steps": 0})
    marks = []

    def emit(event) -> None:
        if isinstance(event, Metric) and "loss" in event.values:
            marks.append(Mark(time.time(), time.process_time(), event.values["tokens"]))

    result = run_training(config, emit)
    chosen = {name: resolved[name] for name in ("padding_free", "gradient_checkpointing") if name in resolved}
    return {"train_loss": result.train_loss, "chosen": chosen, "flop_tokens": result.trained_tokens,
            **span_rates(marks[0], marks[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()
    threads_pin(options.threads)
    from workers.tiny_model import PARAMETERS, tiny_model_build

    HYPER["n_epochs"] = options.epochs
    model_path = tiny_model_build(ROOT / "data" / "base_models" / "tiny-llama")
    with tempfile.TemporaryDirectory(prefix="packing-") as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in skewed_rows(options.rows)))
        bare, ours = [], []
        for index in range(options.rounds):
            bare.append(bare_trl(model_path, data, HYPER, Path(tmp) / f"bare{index}"))
            ours.append(platform_run(model_path, data, Path(tmp) / f"ours{index}"))
            print(f"round {index + 1}: bare {bare[-1]['cpu_rate']:,.0f} tokens/CPU-s, platform "
                  f"{ours[-1]['cpu_rate']:,.0f} ({ours[-1]['cpu_rate'] / bare[-1]['cpu_rate']:.2f}x); losses "
                  f"{bare[-1]['train_loss']:.4f} / {ours[-1]['train_loss']:.4f}", flush=True)
    _report(bare, ours, PARAMETERS)


def _report(bare: list[dict], ours: list[dict], parameters: int) -> None:
    ratios = [o["cpu_rate"] / b["cpu_rate"] for b, o in zip(bare, ours, strict=True)]
    walls = [o["wall_rate"] / b["wall_rate"] for b, o in zip(bare, ours, strict=True)]
    loss_bare, loss_ours = statistics.median(b["train_loss"] for b in bare), statistics.median(
        o["train_loss"] for o in ours)
    # a LoRA step costs ~6 FLOPs per parameter per token (forward, backward through the frozen base)
    peak_share = 6 * parameters * statistics.median(o["cpu_rate"] for o in ours) / matmul_peak_flops()
    print(f"\nplatform's automatic choices: {ours[0]['chosen']}")
    print(f"tokens per CPU-second, platform / bare TRL without packing: median {statistics.median(ratios):.2f}x "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f}; target >= 1.5); wall: median {statistics.median(walls):.2f}x")
    print(f"final train loss: bare {loss_bare:.4f}, platform {loss_ours:.4f} "
          f"({abs(loss_ours - loss_bare) / loss_bare:.2%} apart; target <= 2%)")
    print(f"platform's share of the CPU's matmul peak: {peak_share:.0%} (target >= 35%)")


if __name__ == "__main__":
    main()
