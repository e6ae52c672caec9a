"""Platform overhead: the same LoRA job with bare TRL and through the platform, in one run.

    .venv/bin/python benchmarks/overhead.py [--rows 400] [--epochs 3] [--rounds 7] [--threads 1]

(b) runs on the embedded default in a temporary DATA_DIR (SQLite, bundled Redis, a real
Celery worker process), so it needs no server. Bare and platform runs alternate over the rounds.
For each run it measures, over the same span of the training loop, tokens per CPU-second of the
training process (the headline: other processes on a shared machine barely move it) and wall
tokens/s; it prints both per round, their platform/bare ratios with their spread, the final train
losses, the share of the CPU's measured matmul peak that training reaches, and the
submit→first-step latency on a warm worker.
"""

import argparse
import contextlib
import itertools
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from embedded import DATA_DIR, ROOT, EmbeddedPlatform  # first: it sets the environment Django reads

HYPER = {"n_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "lora_r": 16, "lora_alpha": 32}
TICK = os.sysconf("SC_CLK_TCK")
DISTURBED = 0.03  # a run during which other processes used more of the machine's CPU is run again
QUIET_WAIT = 30  # seconds to wait for a quiet machine before a run; a busy shared one may never be
SAMPLE_SECONDS = 0.02  # how often the worker's CPU time is read during a platform run


# Why the two sides are measured alike. Each is timed from the end of its first logged step to
# the end of its last, at the same trainer hook (``on_log``): model loading, the first step and
# the final save are out of both, and every per-step cost (callbacks, events, the checkpoints of
# the earlier epochs) is in both. The CPU time is the training process's utime + stime from
# /proc (all its threads, so the platform's event writer and heartbeat count against it): bare
# TRL runs in this process and reads its own at the hook; the platform's run is in the Celery
# pool process, whose CPU time a thread here samples from outside and interpolates at the instant
# the worker stamped on the same step. Both processes are long-lived and run job after job, and
# both have the same number of torch threads (threads_pin).


class Mark(NamedTuple):
    """The training process at the end of one logged step: wall clock, CPU seconds, tokens seen."""

    time: float
    cpu: float
    tokens: int


def span_rates(first: Mark, last: Mark) -> dict:
    """Throughput between two marks: tokens per wall second and per CPU-second of the process."""
    tokens = last.tokens - first.tokens
    return {"span_tokens": tokens, "wall_rate": tokens / (last.time - first.time),
            "cpu_rate": tokens / (last.cpu - first.cpu), "cpu_seconds": last.cpu - first.cpu}


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
    clock = _step_clock()
    # TRL prints every step's logs, and loading prints progress bars and warnings; the worker's
    # go to its log file, so these go to a file too.
    with open(DATA_DIR / "bare.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args,
                             train_dataset=load_dataset("json", data_files=str(data), split="train"),
                             processing_class=AutoTokenizer.from_pretrained(model_path), callbacks=[clock],
                             peft_config=LoraConfig(r=hyper["lora_r"], lora_alpha=hyper["lora_alpha"],
                                                    target_modules="all-linear", task_type="CAUSAL_LM"))
        output = trainer.train()
    return {"train_loss": output.training_loss, **span_rates(clock.marks[0], clock.marks[-1])}


def _step_clock():
    """A callback that marks every logged training step, at the hook where the platform's
    reporter timestamps the same step (``on_log``), with the CPU time read the same way."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[Mark] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:  # the steps the platform stores; not the closing summary
                self.marks.append(Mark(time.time(), _cpu_seconds([os.getpid()]), state.num_input_tokens_seen))

    return StepClock()


class CpuSampler:
    """Reads the CPU time of some processes every SAMPLE_SECONDS from a thread of this process
    (so the reads cost the benchmark, not the processes read), to look it up at any instant."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), {name: _cpu_seconds([pid]) for name, pid in self.pids.items()}))
            self.done.wait(SAMPLE_SECONDS)

    def at(self, name: str, when: float) -> float:
        """CPU seconds of ``name`` at ``when``, interpolated between the two samples around it."""
        for (t0, cpu0), (t1, cpu1) in itertools.pairwise(self.samples):
            if t0 <= when <= t1:
                return cpu0[name] + (cpu1[name] - cpu0[name]) * (when - t0) / (t1 - t0)
        raise ValueError(f"{when} is outside the samples of {name}")


class Platform(EmbeddedPlatform):
    """The embedded default with a real Celery worker process: jobs go through services, queue,
    worker, callbacks, events and checkpoints exactly as a user's do."""

    def upload(self, data: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.core.files import File

        from datasets_app.services import dataset_upload

        self.user = get_user_model().objects.create(username="bench")
        with open(data, "rb") as handle:
            self.dataset = dataset_upload(owner=self.user, upload=File(handle, name="bench.jsonl"))

    def training_pid(self, *, timeout: float = 120) -> int:
        """The prefork pool's one child (``-c 1``), which runs every job and outlives them; a
        worker that has just started may not have forked it yet."""
        import psutil

        deadline = time.monotonic() + timeout
        while not (children := psutil.Process(self.worker.pid).children()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children) == 1, f"expected one pool process, found {children}"
        return children[0].pid

    def run(self, hyper: dict) -> dict:
        """One job to the end: its final loss, throughput over the span of the training loop that
        bare_trl measures, the CPU its helper processes used meanwhile, its submit→first-step latency."""
        pids = {"training": self.training_pid(), "worker": self.worker.pid, "redis": self.redis.pid}
        with CpuSampler(pids) as sampler:
            job = _job(self.user, self.dataset, hyper)
            latency = _first_step_latency(job)
            _wait(job)
        job.refresh_from_db()
        first, last = _metric_events(job)
        rates = span_rates(*(Mark(step["time"], sampler.at("training", step["time"]), step["tokens"])
                             for step in (first, last)))
        helpers = sum(sampler.at(name, last["time"]) - sampler.at(name, first["time"]) for name in ("worker", "redis"))
        return {"train_loss": job.metrics["train_loss"], "latency": latency, "helpers_cpu": helpers,
                "omp_threads": _environ(pids["training"]).get("OMP_NUM_THREADS"), **rates}


def _job(user, dataset, hyper):
    from jobs_app.services import job_create

    return job_create(owner=user, training_file=dataset.id, model="tiny-llama", hyperparameters=hyper, seed=42)


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


def _metric_events(job) -> tuple[dict, dict]:
    """The first and last stored training steps: the worker's clock (``time``, taken in ``on_log``
    when the step ended) and the tokens seen by then."""
    from jobs_app.models import JobEvent

    steps = list(JobEvent.objects.filter(job_id=job.id, type="metrics").order_by("seq").values_list("data", flat=True))
    return steps[0], steps[-1]


def _environ(pid: int) -> dict:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


class Disturbance:
    """Other processes (tests, builds) slow training down a lot on a small machine, and never speed
    it up: wait a while for the machine to be quiet, then measure how much CPU processes other than
    the benchmark's own (``pids``) used during a run. A run disturbed after a quiet start is run
    again (``tries`` runs at most); one that started on a busy machine is not, since the machine is
    likely to stay busy and a rerun would only double the time. Each result records that share
    (``others``), so a reader sees how quiet its round was."""

    def __init__(self, pids: Callable[[], list[int]], *, tries: int) -> None:
        self.pids = pids
        self.tries = max(tries, 1)
        self.reruns = 0

    def measure(self, run) -> dict:
        for attempt in range(1, self.tries + 1):
            quiet = self._wait_quiet()
            busy, ours, started = _busy_seconds(), _cpu_seconds(self.pids()), time.monotonic()
            result = run()
            others = (_busy_seconds() - busy) - (_cpu_seconds(self.pids()) - ours)
            result["others"] = others / ((time.monotonic() - started) * os.cpu_count())
            if result["others"] < DISTURBED or not quiet or attempt == self.tries:
                return result
            self.reruns += 1

    def _wait_quiet(self) -> bool:
        deadline = time.monotonic() + QUIET_WAIT
        while time.monotonic() < deadline:
            busy, ours = _busy_seconds(), _cpu_seconds(self.pids())
            time.sleep(1)
            if (_busy_seconds() - busy) - (_cpu_seconds(self.pids()) - ours) < DISTURBED * os.cpu_count():
                return True
        return False


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes, all their threads (utime + stime in /proc)."""
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
    """FLOPs per CPU-second of a large matmul at the pinned thread count: counted in CPU time like
    the headline, so other processes on the machine do not lower it (in wall time they halved it)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(5):
        started = time.process_time()
        torch.matmul(a, b)
        best = max(best, 2 * 2048**3 / (time.process_time() - started))
    return best


def threads_pin(threads: int) -> None:
    """Give both sides the same number of torch threads, before torch is imported here or in the
    worker (which inherits the environment).

    One thread by default, because tokens per CPU-second only measures work when no thread waits
    for another: torch's OpenMP threads spin at every barrier of these tiny ops. With two threads
    on this 2-core machine a third of the CPU time was spinning even when it was quiet, and tokens
    per CPU-second fell eightfold when another process took a core (one thread: by 10-15%).
    """
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="bare/platform pairs, alternating which goes first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same on both sides")
    parser.add_argument("--tries", type=int, default=2, help="runs of one side per round while disturbed")
    options = parser.parse_args()
    threads_pin(options.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the worker and redis on the way out
    from workers.sample_data import classification_write
    from workers.tiny_model import tiny_model_build

    hyper = {**HYPER, "n_epochs": options.epochs}
    model_path = tiny_model_build(ROOT / "data" / "base_models" / "tiny-llama")
    data = classification_write(DATA_DIR / "bench.jsonl", options.rows)
    bare, ours = [], []
    with Platform() as platform:
        platform.upload(data)
        machine = Disturbance(lambda: _process_tree(os.getpid()), tries=options.tries)  # with the worker and redis
        # Warm both up the same way: first imports, first model load, first kernels.
        bare_trl(model_path, data, {**hyper, "n_epochs": 1}, DATA_DIR / "warm")
        platform.run({**hyper, "n_epochs": 1})
        for index in range(options.rounds):
            for side in ("bare", "platform") if index % 2 == 0 else ("platform", "bare"):
                if side == "bare":
                    bare.append(machine.measure(lambda: bare_trl(model_path, data, hyper, DATA_DIR / "bare")))
                else:
                    ours.append(machine.measure(lambda: platform.run(hyper)))
            _round_print(index, bare[-1], ours[-1])
    _report(options, bare, ours, reruns=machine.reruns)


def _round_print(index: int, bare: dict, ours: dict) -> None:
    print(f"round {index + 1} ({'bare' if index % 2 == 0 else 'platform'} first): "
          f"tokens/CPU-s bare {bare['cpu_rate']:.0f}, platform {ours['cpu_rate']:.0f}, "
          f"ratio {ours['cpu_rate'] / bare['cpu_rate']:.3f} | "
          f"wall tokens/s bare {bare['wall_rate']:.0f}, platform {ours['wall_rate']:.0f}, "
          f"ratio {ours['wall_rate'] / bare['wall_rate']:.3f} | "
          f"others' CPU share {bare['others']:.0%} / {ours['others']:.0%}, load {os.getloadavg()[0]:.2f}", flush=True)


def _report(options, bare: list[dict], ours: list[dict], *, reruns: int) -> None:
    """Tokens per CPU-second is the headline. It counts the CPU time the training process itself
    used, which other processes taking the CPU away change by some 10%, while wall time falls by
    half or more on a busy shared machine. Pairing each platform run with the bare run beside it and
    taking the median over rounds cancels what drift is left (cache misses after being preempted,
    the host's clock) and ignores an odd round. The wall figure is printed beside it: on a quiet
    machine it is what a user sees."""
    print(f"\nrows={options.rows} epochs={options.epochs} rounds={options.rounds} threads={options.threads} "
          f"(torch threads in bare: {_torch_threads()}, OMP_NUM_THREADS in the worker's training process: "
          f"{ours[-1]['omp_threads']}); tokens in the measured span: bare {bare[0]['span_tokens']}, "
          f"platform {ours[0]['span_tokens']}; runs disturbed by other processes and run again: {reruns}")
    _metric_report("tokens per CPU-second of the training process", "cpu_rate", bare, ours)
    _metric_report("wall tokens/s", "wall_rate", bare, ours)
    _loss_report(bare, ours)
    helpers = statistics.median(run["helpers_cpu"] / run["cpu_seconds"] for run in ours)
    print(f"the platform's other processes (Celery main process, redis) used {helpers:.1%} of the training "
          f"process's CPU time during the same span (median; not in the ratios above)")
    _peak_report(bare, ours)
    latencies = [run["latency"] for run in ours]
    print(f"submit -> first step on a warm worker: {statistics.median(latencies):.2f} s median, "
          f"{max(latencies):.2f} s worst (target <= 5 s)")
    cpu_ratios = _ratios("cpu_rate", bare, ours)
    q1, _, q3 = statistics.quantiles(cpu_ratios, n=4)
    print(f"\nHEADLINE: platform/bare tokens per CPU-second of the training process, median of "
          f"{len(cpu_ratios)} rounds: {statistics.median(cpu_ratios):.3f} (interquartile {q1:.3f}-{q3:.3f}, "
          f"min {min(cpu_ratios):.3f}, max {max(cpu_ratios):.3f}; target >= 0.97). CPU time, because "
          f"other processes on a shared machine take wall time from a run but add little to the CPU "
          f"time it needs; the median of paired rounds, because it ignores an odd round.")


def _metric_report(title: str, key: str, bare: list[dict], ours: list[dict]) -> None:
    ratios = _ratios(key, bare, ours)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"\n{title}:")
    for name, runs in (("bare TRL", bare), ("platform", ours)):
        values = [run[key] for run in runs]
        print(f"  {name:9} per round {' '.join(f'{v:.0f}' for v in values)}; "
              f"best {max(values):.0f}, median {statistics.median(values):.0f}")
    print(f"  ratio platform/bare per round {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"  ratio: median {statistics.median(ratios):.3f}, interquartile {q1:.3f}-{q3:.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}; best vs best "
          f"{max(run[key] for run in ours) / max(run[key] for run in bare):.3f}")


def _ratios(key: str, bare: list[dict], ours: list[dict]) -> list[float]:
    return [o[key] / b[key] for b, o in zip(bare, ours, strict=True)]


def _loss_report(bare: list[dict], ours: list[dict]) -> None:
    losses = {round(run["train_loss"], 6) for run in bare + ours}
    gap = abs(ours[-1]["train_loss"] - bare[-1]["train_loss"]) / bare[-1]["train_loss"]
    print(f"\nfinal train loss: bare {bare[-1]['train_loss']:.4f}, platform {ours[-1]['train_loss']:.4f}, "
          f"{gap:.2%} apart (target <= 1%); {len(losses)} distinct final loss(es) in all runs")


def _peak_report(bare: list[dict], ours: list[dict]) -> None:
    """Training FLOPs per CPU-second over a matmul's, both at the thread count pinned above."""
    from workers.tiny_model import PARAMETERS

    peak = matmul_peak_flops()
    for name, runs in (("bare", bare), ("platform", ours)):
        share = statistics.median(run["cpu_rate"] for run in runs) * 6 * PARAMETERS / peak
        print(f"{name}: {share:.1%} of the CPU's matmul peak at its median tokens per CPU-second "
              f"({peak / 1e9:.0f} GFLOP per CPU-second, 6·N FLOPs per token)")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
