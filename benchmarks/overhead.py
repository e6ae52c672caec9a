"""Platform overhead: the same LoRA job with bare TRL and through the platform, in one run.

    .venv/bin/python benchmarks/overhead.py [--rows 400] [--epochs 3] [--rounds 5]

(b) runs on the embedded default in a temporary DATA_DIR (SQLite, bundled Redis, a real
Celery worker process), so it needs no server. Prints tokens/s of each, their ratio, the final
train losses, the share of the CPU's measured matmul peak that training reaches, and the
submit→first-step latency on a warm worker.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA_DIR = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
for name in ("DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME"):
    os.environ.pop(name, None)
os.environ.update(DATA_DIR=str(DATA_DIR), DJANGO_SETTINGS_MODULE="finetune_site.settings",
                  BASE_MODELS_DIR=str(ROOT / "data" / "base_models"), HF_HUB_OFFLINE="1")
HYPER = {"n_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "lora_r": 16, "lora_alpha": 32}
TICK = os.sysconf("SC_CLK_TCK")
DISTURBED = 0.03  # a run during which other processes used more of the machine's CPU is run again


def bare_trl(model_path: Path, data: Path, hyper: dict, out: Path) -> dict:
    """What a user would write by hand: SFTTrainer + LoRA with CPU-appropriate settings, saving a
    checkpoint every epoch as the platform does (TRL's own save: both pay it alike)."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(out), num_train_epochs=hyper["n_epochs"],
                     per_device_train_batch_size=hyper["batch_size"], learning_rate=hyper["learning_rate"],
                     max_length=1024, seed=42, data_seed=42, logging_steps=1, save_strategy="epoch",
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


class Platform:
    """The embedded default with a real Celery worker process: jobs go through services, queue,
    worker, callbacks, events and checkpoints exactly as a user's do."""

    def __enter__(self):
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from finetune_site.embedded import embedded_redis_start

        call_command("migrate", verbosity=0)
        self.redis = embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET)
        self.worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-l",
                                        "warning", "-Q", "default,training", "-c", "1"], cwd=ROOT)
        return self

    def __exit__(self, *exc_info) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=60)
        self.redis.terminate()

    def upload(self, data: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.core.files import File

        from datasets_app.services import dataset_upload

        self.user = get_user_model().objects.create(username="bench")
        with open(data, "rb") as handle:
            self.dataset = dataset_upload(owner=self.user, upload=File(handle, name="bench.jsonl"))

    def run(self, hyper: dict) -> tuple[dict, float]:
        """One job to the end: its final metrics and its submit→first-step latency."""
        job = _job(self.user, self.dataset, hyper)
        latency = _first_step_latency(job)
        _wait(job)
        job.refresh_from_db()
        return job.metrics, latency


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
        time.sleep(0.5)
        job.refresh_from_db()
    assert job.status == "succeeded", job.error


class Disturbance:
    """Other processes (tests, builds) slow training down a lot on a small machine, and never speed
    it up: wait until the machine is quiet, then measure how much CPU processes other than the
    benchmark's own (``pids``) used during a run; a disturbed run is run again."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.reruns = 0

    def measure(self, run, *, tries: int = 4):
        for _ in range(tries):
            self._wait_quiet()
            busy, ours, started = _busy_seconds(), _cpu_seconds(self.pids()), time.monotonic()
            result = run()
            others = (_busy_seconds() - busy) - (_cpu_seconds(self.pids()) - ours)
            if others / ((time.monotonic() - started) * os.cpu_count()) < DISTURBED:
                return result
            self.reruns += 1
        return result

    def _wait_quiet(self, *, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy, ours = _busy_seconds(), _cpu_seconds(self.pids())
            time.sleep(1)
            if (_busy_seconds() - busy) - (_cpu_seconds(self.pids()) - ours) < DISTURBED * os.cpu_count():
                return


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            pids += _process_tree(int(child))
    return pids


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
    parser.add_argument("--rounds", type=int, default=5, help="bare/platform pairs, alternating which goes first")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the worker and redis on the way out
    from workers.sample_data import classification_write
    from workers.tiny_model import tiny_model_build

    hyper = {**HYPER, "n_epochs": options.epochs}
    model_path = tiny_model_build(ROOT / "data" / "base_models" / "tiny-llama")
    data = classification_write(DATA_DIR / "bench.jsonl", options.rows)
    bare, ours, latencies = [], [], []
    with Platform() as platform:
        platform.upload(data)
        machine = Disturbance(lambda: _process_tree(os.getpid()))  # with the worker and redis
        # Warm both up the same way: first imports, first model load, first kernels.
        bare_trl(model_path, data, {**hyper, "n_epochs": 1}, DATA_DIR / "warm")
        platform.run({**hyper, "n_epochs": 1})
        for index in range(options.rounds):
            for side in ("bare", "platform") if index % 2 == 0 else ("platform", "bare"):
                if side == "bare":
                    bare.append(machine.measure(lambda: bare_trl(model_path, data, hyper, DATA_DIR / "bare")))
                else:
                    metrics, latency = machine.measure(lambda: platform.run(hyper))
                    ours.append(metrics)
                    latencies.append(latency)
            print(f"round {index + 1}: bare {bare[-1]['tokens_per_second']:.0f} tokens/s, "
                  f"platform {ours[-1]['tokens_per_second']:.0f} tokens/s, load {os.getloadavg()[0]:.2f}", flush=True)
    _report(options, bare, ours, latencies, reruns=machine.reruns)


def _report(options, bare: list[dict], ours: list[dict], latencies: list[float], *, reruns: int) -> None:
    """Other processes on the machine only ever slow a run down, so each side's fastest run is the
    closest to its true speed; the median of the per-round ratios is printed beside it."""
    from workers.tiny_model import PARAMETERS

    peak = matmul_peak_flops()
    best_bare = max(run["tokens_per_second"] for run in bare)
    best_ours = max(run["tokens_per_second"] for run in ours)
    pairs = statistics.median(o["tokens_per_second"] / b["tokens_per_second"] for b, o in zip(bare, ours, strict=True))
    losses = {round(run["train_loss"], 6) for run in bare + ours}
    loss_gap = abs(ours[-1]["train_loss"] - bare[-1]["train_loss"]) / bare[-1]["train_loss"]
    print(f"rows={options.rows} epochs={options.epochs} tokens={bare[0]['tokens']} rounds={options.rounds} "
          f"(runs disturbed by other processes and run again: {reruns})")
    print(f"bare TRL:  {best_bare:8.0f} tokens/s best, {_median(bare):8.0f} median; "
          f"final train loss {bare[-1]['train_loss']:.4f}")
    print(f"platform:  {best_ours:8.0f} tokens/s best, {_median(ours):8.0f} median; "
          f"final train loss {ours[-1]['train_loss']:.4f}")
    print(f"ratio platform/bare: {best_ours / best_bare:.3f} best vs best, {pairs:.3f} median of rounds "
          f"(target >= 0.97)")
    print(f"train loss difference {loss_gap:.2%} (target <= 1%); {len(losses)} distinct final loss(es) in all runs")
    for name, best in (("bare", best_bare), ("platform", best_ours)):
        share = best * 6 * PARAMETERS / peak
        print(f"{name}: {share:.1%} of the CPU matmul peak ({peak / 1e9:.0f} GFLOP/s, 6·N FLOPs per token)")
    print(f"submit -> first step on a warm worker: {statistics.median(latencies):.2f} s median, "
          f"{max(latencies):.2f} s worst (target <= 5 s)")


def _median(runs: list[dict]) -> float:
    return statistics.median(run["tokens_per_second"] for run in runs)


if __name__ == "__main__":
    main()
