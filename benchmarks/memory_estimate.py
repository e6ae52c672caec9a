"""How close the memory estimate (``workers.estimate.memory_need``, CPU) comes to a CPU run's peak.

    .venv/bin/python benchmarks/memory_estimate.py             # every configuration (~30 minutes on 2 busy cores)
    .venv/bin/python benchmarks/memory_estimate.py --only llama-65m
    .venv/bin/python benchmarks/memory_estimate.py --platform --only tiny-lora-b4   # the job estimate's bases

What is measured: each configuration trains in a fresh process (``workers.training.run_training`` on
CPU, fp32, a few steps of one epoch with its checkpoint and final save, as a job does). Before the run
that process imports the libraries a run uses (torch, transformers with the model's family, peft, trl,
datasets, accelerate, deepspeed); the RSS then is the baseline. A thread samples the RSS every 5 ms during the run
(psutil), and the figure measured is the peak minus the baseline: the memory the job adds to a worker
that has its libraries loaded. The rows are long enough to be truncated, so every batch is
``batch_size`` x ``max_length`` tokens. The estimate is ``memory_need`` for the same options on a CPU
device; the ratio is estimate / measured (the target: within 0.8-1.2 for every configuration).

The models are built here: the tiny model (3M parameters), two of the tiny families (Qwen2, Gemma;
2 layers, saved in bf16 and trained in fp32), and random Llama configurations of 20M, 52M and 65M parameters
(one with a 32,000-token vocabulary, where the logits weigh), so the model's share dominates the fixed
cost of a run.

``--platform`` compares what a job is shown instead of the raw formula: the options resolved as a job's
are (``workers.hyperparameters``), and ``jobs_app.services.estimates.job_memory_estimate`` on a platform
with no GPU worker (a temporary SQLite database unless DATABASE_URL is set) — the "formula" basis — against
the measured peak, next to the two other bases a job estimate can have: "calibration" (``calibrate``, four
steps of the same options in a fresh process) and "past_runs" (the ``peak_memory_bytes`` the run itself
recorded, what the next job with the same options reads). Each is printed as a ratio to the measured peak.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model learns from examples and every answer should be short clear and correct when the "
         "user asks about weather music food sports travel history science code").split()

# Random Llama configurations built here, larger than the tiny model (head_dim 64, 4 key/value heads).
LLAMAS = {name: dict(zip(("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                           "num_key_value_heads", "vocab_size"), sizes, strict=True))
          for name, sizes in {"llama-20m": (512, 1536, 6, 8, 4, 1024), "llama-65m": (768, 2048, 10, 12, 4, 1024),
                              "llama-52m-32k": (512, 1536, 6, 8, 4, 32000)}.items()}
# (name, model, adapter, batch_size, max_length, gradient_checkpointing)
CONFIGS = [
    ("tiny-lora-b4-l128", "tiny", "lora", 4, 128, False),
    ("tiny-full-b8-l256", "tiny", "full", 8, 256, False),
    ("tiny-lora-b64-l128", "tiny", "lora", 64, 128, False),
    ("tiny-lora-b16-l512", "tiny", "lora", 16, 512, False),
    ("tiny-lora-b16-l512-ckpt", "tiny", "lora", 16, 512, True),
    ("qwen2-lora-b8-l256", "qwen2", "lora", 8, 256, False),
    ("gemma-full-b8-l256", "gemma", "full", 8, 256, False),
    ("llama-20m-full-b8-l256", "llama-20m", "full", 8, 256, False),
    ("llama-20m-lora-b8-l512-ckpt", "llama-20m", "lora", 8, 512, True),
    ("llama-65m-full-b4-l256", "llama-65m", "full", 4, 256, False),
    ("llama-65m-lora-b8-l256", "llama-65m", "lora", 8, 256, False),
    ("llama-52m-32k-full-b4-l256", "llama-52m-32k", "full", 4, 256, False),
]
STEPS = 3


def model_build(name: str, root: Path, tiny: Path) -> Path:
    """The model ``name`` under ``root`` (built once), with the tiny model's tokenizer."""
    from workers.tiny_model import FAMILIES, tiny_family_build

    path = root / name
    if name == "tiny" or path.exists():
        return tiny if name == "tiny" else path
    if name in FAMILIES:
        return tiny_family_build(path, name, tokenizer_from=tiny)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    config = LlamaConfig(**LLAMAS[name], max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def rows_write(path: Path, count: int) -> Path:
    """``count`` text rows of ~1,000 words: longer than any max_length here, so each is truncated."""
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            handle.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=1000))}) + "\n")
    return path


def measure(model: Path, train: Path, output: Path, *, adapter: str, batch_size: int, max_length: int,
            checkpointing: bool, calibrate: bool = False) -> dict:
    """One run in a fresh process (see the module docstring): its peak RSS growth ("growth", bytes) and the
    peak it recorded itself ("recorded"); with ``calibrate`` the calibration's figure ("growth") instead."""
    order = {"model": str(model), "train": str(train), "output": str(output), "adapter": adapter,
             "batch_size": batch_size, "max_length": max_length, "checkpointing": checkpointing,
             "calibrate": calibrate}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(order)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"the measured run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(order: dict) -> None:
    # the libraries are imported before the baseline: the growth is the run's memory, not theirs
    _libraries_import(order["model"])
    from stream_memory import rss_peak_during

    from workers.estimate import calibrate
    from workers.training import run_training

    config = _config(order)
    if order.get("calibrate"):  # the figure a job's short calibration gives
        print(json.dumps({"growth": calibrate(config).peak_memory_bytes}))
        return
    measured = rss_peak_during(lambda: run_training(config, lambda event: None))
    print(json.dumps({"baseline": measured["baseline"], "peak": measured["peak"], "growth": measured["growth"],
                      "recorded": measured["result"].peak_memory_bytes}))


def _config(order: dict):
    from workers.config import TrainConfig

    return TrainConfig(model_path=order["model"], train_file=order["train"], output_dir=order["output"],
                       adapter=order["adapter"], n_epochs=1, batch_size=order["batch_size"],
                       max_length=order["max_length"], gradient_checkpointing=order["checkpointing"],
                       learning_rate=1e-4, logging_steps=1000)


def _libraries_import(model: str) -> None:
    import importlib
    import importlib.util

    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers
    from trl import SFTTrainer  # noqa: F401

    if importlib.util.find_spec("deepspeed"):  # the Trainer imports it where it is installed
        import deepspeed  # noqa: F401
    family = transformers.AutoConfig.from_pretrained(model).model_type
    importlib.import_module(f"transformers.models.{family}.modeling_{family}")


def estimate(model: Path, *, adapter: str, batch_size: int, max_length: int, checkpointing: bool) -> int:
    """``memory_need`` on a CPU device, from the sizes the platform records when a model is registered."""
    from workers.estimate import Shape, memory_need
    from workers.model_files import model_describe

    info = model_describe(str(model))
    return memory_need(parameters=info.parameters, shape=Shape(**info.shape), adapter=adapter, quantization="nf4",
                       batch_size=batch_size, max_length=max_length, checkpointing=checkpointing,
                       half_precision=False, device="cpu")


def platform_estimate(model: Path, *, adapter: str, batch_size: int, max_length: int, checkpointing: bool) -> int:
    """What a supervised job with these options is shown on a platform without GPU workers: its options
    resolved as a job's are, then ``job_memory_estimate`` for the model as it would be registered."""
    from jobs_app.services.estimates import job_memory_estimate
    from models_app.base_models.models import BaseModel
    from workers.hyperparameters import Context, hyperparameters_resolve
    from workers.model_files import model_describe

    info = model_describe(str(model))
    base = BaseModel(name=model.name, source=str(model), parameters=info.parameters, shape=info.shape,
                     context_length=info.context_length)
    hp = hyperparameters_resolve({"adapter": adapter, "batch_size": batch_size, "max_length": max_length,
                                  "gradient_checkpointing": checkpointing, "n_epochs": 1},
                                 Context(parameters=info.parameters, context_length=info.context_length,
                                         rows=batch_size * STEPS))
    memory, basis = job_memory_estimate(base_model=base, hp=hp, objective="supervised")
    if basis != "formula":
        raise RuntimeError(f"the job estimate's memory basis is {basis!r}, not the formula")
    return memory


def _django_setup(workdir: Path) -> None:
    """The platform on a fresh SQLite database (unless DATABASE_URL names one), migrated."""
    import os

    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'platform.sqlite3'}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_site.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def platform_compare(configs: list, workdir: Path, tiny: Path) -> None:
    """The job estimate's three memory bases against the measured peak, configuration by configuration."""
    _django_setup(workdir)
    print(f"{'configuration':<30} {'measured MiB':>12} {'formula':>8} {'calib.':>8} {'past run':>8}   (ratios)",
          flush=True)
    for name, model_name, adapter, batch_size, max_length, checkpointing in configs:
        model = model_build(model_name, workdir, tiny)
        train = rows_write(workdir / f"train-{batch_size}.jsonl", batch_size * STEPS)
        options = {"adapter": adapter, "batch_size": batch_size, "max_length": max_length,
                   "checkpointing": checkpointing}
        run = measure(model, train, workdir / f"out-{name}", **options)
        calibrated = measure(model, train, workdir / f"calibrate-{name}", calibrate=True, **options)["growth"]
        ratios = [platform_estimate(model, **options) / run["growth"], calibrated / run["growth"],
                  run["recorded"] / run["growth"]]
        print(f"{name:<30} {run['growth'] / 2**20:>12.0f} " + " ".join(f"{r:>8.2f}" for r in ratios), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the configurations whose name contains this")
    parser.add_argument("--platform", action="store_true",
                        help="compare the job estimate's bases (formula, calibration, past run) instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        return _child(json.loads(args.child))
    from workers.tiny_model import tiny_model_build

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        tiny = tiny_model_build(workdir / "tiny")
        if args.platform:
            return platform_compare([c for c in CONFIGS if not args.only or args.only in c[0]], workdir, tiny)
        print(f"{'configuration':<30} {'estimate MiB':>12} {'measured MiB':>12} {'ratio':>6}", flush=True)
        ratios = []
        for name, model_name, adapter, batch_size, max_length, checkpointing in CONFIGS:
            if args.only and args.only not in name:
                continue
            model = model_build(model_name, workdir, tiny)
            train = rows_write(workdir / f"train-{batch_size}.jsonl", batch_size * STEPS)
            options = {"adapter": adapter, "batch_size": batch_size, "max_length": max_length,
                       "checkpointing": checkpointing}
            measured = measure(model, train, workdir / f"out-{name}", **options)["growth"]
            estimated = estimate(model, **options)
            ratios.append(estimated / measured)
            print(f"{name:<30} {estimated / 2**20:>12.0f} {measured / 2**20:>12.0f} {ratios[-1]:>6.2f}", flush=True)
        if ratios:
            print(f"ratio range {min(ratios):.2f}-{max(ratios):.2f}; within 20%: "
                  f"{sum(0.8 <= r <= 1.2 for r in ratios)} of {len(ratios)}")


if __name__ == "__main__":
    main()
