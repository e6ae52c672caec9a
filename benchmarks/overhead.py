"""Platform overhead: the same LoRA job with bare TRL and through the platform, in one run.

    .venv/bin/python benchmarks/overhead.py [--rows 400] [--epochs 3]

(b) runs on the embedded default in a temporary DATA_DIR (SQLite, bundled Redis, a real
Celery worker process), so it needs no server. Prints tokens/s of each, their ratio, the final
train losses, the share of the CPU's measured matmul peak that training reaches, and the
submit→first-step latency on a warm worker.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA_DIR = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
for name in ("DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME"):
    os.environ.pop(name, None)
os.environ.update(DATA_DIR=str(DATA_DIR), DJANGO_SETTINGS_MODULE="finetune_site.settings",
                  BASE_MODELS_DIR=str(ROOT / "data" / "base_models"), HF_HUB_OFFLINE="1")
HYPER = {"n_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "lora_r": 16, "lora_alpha": 32}


def bare_trl(model_path: Path, data: Path, hyper: dict, out: Path) -> dict:
    """What a user would write by hand: SFTTrainer + LoRA with CPU-appropriate settings."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), num_train_epochs=hyper["n_epochs"],
                     per_device_train_batch_size=hyper["batch_size"], learning_rate=hyper["learning_rate"],
                     max_length=1024, seed=42, data_seed=42, logging_steps=1, save_strategy="no",
                     bf16=False, use_cpu=True, activation_checkpointing=False, assistant_only_loss=True,
                     include_num_input_tokens_seen="non_padding", dataloader_pin_memory=False,
                     report_to="none", disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                         train_dataset=load_dataset("json", data_files=str(data), split="train"),
                         processing_class=AutoTokenizer.from_pretrained(model_path),
                         peft_config=LoraConfig(r=hyper["lora_r"], lora_alpha=hyper["lora_alpha"],
                                                target_modules="all-linear", task_type="CAUSAL_LM"))
    started = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - started
    tokens = trainer.state.num_input_tokens_seen
    return {"tokens_per_second": tokens / wall, "train_loss": output.training_loss, "tokens": tokens}


def platform(data: Path, hyper: dict) -> tuple[dict, float]:
    """The same job through services, queue, worker, callbacks, events and checkpoints."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.management import call_command

    from datasets_app.services import dataset_upload
    from finetune_site.embedded import embedded_redis_start

    call_command("migrate", verbosity=0)
    redis = embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-l", "warning",
                               "-Q", "default,training", "-c", "1"], cwd=ROOT)
    try:
        user = get_user_model().objects.create(username="bench")
        with open(data, "rb") as handle:
            dataset = dataset_upload(owner=user, upload=File(handle, name="bench.jsonl"))
        warm_up = _job(user, dataset, {**hyper, "n_epochs": 1})  # the worker imports torch and loads once
        _wait(warm_up)
        job = _job(user, dataset, hyper)
        latency = _first_step_latency(job)
        _wait(job)
        job.refresh_from_db()
        return job.metrics, latency
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        redis.terminate()


def _job(user, dataset, hyper):
    from jobs_app.services import job_create

    return job_create(owner=user, training_file=dataset.id, model="tiny-llama", hyperparameters=hyper)


def _first_step_latency(job) -> float:
    from jobs_app.models import JobEvent

    submitted = time.monotonic()
    while not JobEvent.objects.filter(job_id=job.id, type="metrics").exists():
        time.sleep(0.02)
    return time.monotonic() - submitted


def _wait(job) -> None:
    while not job.is_finished:
        time.sleep(0.2)
        job.refresh_from_db()
    assert job.status == "succeeded", job.error


def matmul_peak_flops() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(5):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * 2048**3 / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    options = parser.parse_args()
    from workers.sample_data import classification_write
    from workers.tiny_model import PARAMETERS, tiny_model_build

    hyper = {**HYPER, "n_epochs": options.epochs}
    model_path = tiny_model_build(ROOT / "data" / "base_models" / "tiny-llama")
    data = classification_write(DATA_DIR / "bench.jsonl", options.rows)
    bare_trl(model_path, data, {**hyper, "n_epochs": 1}, DATA_DIR / "warm")  # warm up like the platform's
    bare = bare_trl(model_path, data, hyper, DATA_DIR / "bare")
    ours, latency = platform(data, hyper)
    peak = matmul_peak_flops()
    ratio = ours["tokens_per_second"] / bare["tokens_per_second"]
    loss_gap = abs(ours["train_loss"] - bare["train_loss"]) / bare["train_loss"]
    print(f"rows={options.rows} epochs={options.epochs} tokens={bare['tokens']}")
    print(f"bare TRL:  {bare['tokens_per_second']:8.0f} tokens/s  final train loss {bare['train_loss']:.4f}")
    print(f"platform:  {ours['tokens_per_second']:8.0f} tokens/s  final train loss {ours['train_loss']:.4f}")
    print(f"ratio platform/bare: {ratio:.3f} (target >= 0.97); train loss difference {loss_gap:.2%} (target <= 1%)")
    for name, run in (("bare", bare), ("platform", ours)):
        share = run["tokens_per_second"] * 6 * PARAMETERS / peak
        print(f"{name}: {share:.1%} of the CPU matmul peak ({peak / 1e9:.0f} GFLOP/s, 6·N FLOPs per token)")
    print(f"submit -> first step on a warm worker: {latency:.2f} s (target <= 5 s)")


if __name__ == "__main__":
    main()
