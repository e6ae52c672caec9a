"""How honest the time estimates are: varied jobs run to the end, each estimate against what happened.

    .venv/bin/python benchmarks/estimates.py [--only NAME]

Runs on the embedded default in a temporary DATA_DIR (SQLite, bundled Redis, a real Celery worker
process), like a user's first `make run`. For each job it prints the estimate made when the job was
queued (its parts and their sum), the live ETA after the first few steps, and the actual time from
queued to the end of the job (its evaluation included), each as estimate / actual. The first job of
a kind has no history; later ones learn from the earlier ones, as a user's jobs do.
"""

import argparse
import statistics
import time

from embedded import DATA_DIR, EmbeddedPlatform  # first: it sets the environment Django reads

STEPS_IN = 3  # the live ETA is judged once this many steps are in
# (name, training rows, validation rows, hyperparameters): small to large, with and without validation
JOBS = [
    ("lora-48", 48, 0, {"n_epochs": 3}),
    ("lora-48-valid", 48, 16, {"n_epochs": 3}),
    ("lora-200-valid", 200, 24, {"n_epochs": 2, "save_steps": 10}),
    ("full-96", 96, 0, {"n_epochs": 2, "adapter": "full"}),
    ("lora-120-valid-evalsteps", 120, 16, {"n_epochs": 2, "eval_steps": 5}),
    ("lora-300", 300, 0, {"n_epochs": 2}),
]


class Platform(EmbeddedPlatform):
    """The embedded default with a real worker on the default and training queues, and a user."""

    def __enter__(self):
        super().__enter__()
        from django.contrib.auth import get_user_model

        self.user = get_user_model().objects.create(username="bench")
        return self

    def upload(self, rows: int, seed: int, name: str):
        from django.core.files import File

        from datasets_app.services import dataset_upload
        from workers.sample_data import classification_write

        path = classification_write(DATA_DIR / name, rows, seed=seed)
        with open(path, "rb") as handle:
            return dataset_upload(owner=self.user, upload=File(handle, name=name))

    def run(self, name: str, rows: int, valid: int, hyper: dict) -> dict:
        from jobs_app.services import job_create

        train = self.upload(rows, 0, f"{name}.jsonl")
        validation = self.upload(valid, 1, f"{name}-valid.jsonl") if valid else None
        job = job_create(owner=self.user, training_file=train.id, model="tiny-llama", suffix=name,
                         validation_file=validation.id if validation else None,
                         hyperparameters={"learning_rate": 3e-3, **hyper})
        queued_at = _wait_for(lambda: _queued_at(job))
        job.refresh_from_db()
        eta, eta_at = _wait_for(lambda: _eta_after(job, STEPS_IN))
        finished_at = _wait_for(lambda: _finished_at(job))
        job.refresh_from_db()
        return {"estimate": job.estimate, "actual": finished_at - queued_at, "phases": _phases(job, finished_at),
                "eta": eta, "eta_actual": finished_at - eta_at, "measured": job.metrics}


def _wait_for(probe, timeout: float = 1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.2)
    raise TimeoutError(probe)


def _queued_at(job) -> float | None:
    job.refresh_from_db()
    if job.status == "failed":
        raise RuntimeError(job.error)
    return job.queued_at.timestamp() if job.queued_at and job.status != "validating_files" else None


def _eta_after(job, steps: int) -> tuple[float, float] | None:
    """The live ETA the job page showed when step ``steps`` ended, and when that was."""
    from jobs_app.models import JobEvent

    for data in JobEvent.objects.filter(job_id=job.id, type="metrics").order_by("seq").values_list("data", flat=True):
        if data.get("step", 0) >= steps and data.get("eta_seconds") is not None:
            return data["eta_seconds"], data["time"]
    return None


def _finished_at(job) -> float | None:
    """When the job's work ended: its evaluation's end when it has one, else its own."""
    job.refresh_from_db()
    if job.status in ("failed", "cancelled"):
        raise RuntimeError(f"{job.id} {job.status}: {job.error}")
    if job.status != "succeeded":
        return None
    model = job.result_model
    if job.validation_dataset_id:
        evaluation = model.evaluations.first()
        if evaluation is None or not evaluation.is_finished:
            return None
        return evaluation.finished_at.timestamp()
    return job.finished_at.timestamp()


def _phases(job, finished_at: float) -> dict:
    """What happened, grouped as the estimate's parts: setup (claim to the first step's end), the
    run (training, validation passes, checkpoints, finishing) and the evaluation."""
    from jobs_app.models import JobEvent

    job.refresh_from_db()
    first = JobEvent.objects.filter(job_id=job.id, type="metrics").order_by("seq").values_list("data", flat=True)[0]
    started, ended = job.started_at.timestamp(), job.finished_at.timestamp()
    return {"wait": started - job.queued_at.timestamp(), "setup": first["time"] - started,
            "run": ended - first["time"], "evaluation": finished_at - ended}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="run only the job of this name")
    args = parser.parse_args()
    results = []
    with Platform() as platform:
        for name, rows, valid, hyper in JOBS:
            if args.only and name != args.only:
                continue
            result = platform.run(name, rows, valid, hyper)
            results.append((name, result))
            _print(name, result)
    _summary(results)


def _print(name: str, result: dict) -> None:
    estimate, phases = result["estimate"], result["phases"]
    parts = estimate.get("parts") or {}
    foreseen = {"setup": parts.get("setup"), "evaluation": parts.get("evaluation") or 0.0,
                "run": sum(parts.get(p) or 0.0 for p in ("training", "validation", "checkpoints", "finishing"))}
    total = estimate.get("seconds")
    ratio = f"{total / result['actual']:.2f}" if total else "n/a"
    print(f"{name} (basis {estimate.get('basis')}): estimate at queue {total} s vs actual {result['actual']:.1f} s "
          f"-> {ratio}; ETA after {STEPS_IN} steps {result['eta']:.1f} s vs {result['eta_actual']:.1f} s -> "
          f"{result['eta'] / result['eta_actual']:.2f}", flush=True)
    for part, seconds in phases.items():
        guess = foreseen.get(part)
        print(f"    {part:<10} actual {seconds:6.1f} s" + (f", estimated {guess:6.1f} s" if guess is not None else ""))
    _print_each(estimate, result["measured"])


def _print_each(estimate: dict, measured: dict) -> None:
    """A step, a validation pass and a checkpoint: the estimate's cost of each against the run's."""
    parts, steps = estimate.get("parts") or {}, estimate.get("steps") or 0
    for label, part, count, seconds, done in (
            ("step", "training", steps, measured.get("step_seconds"), 1),
            ("pass", "validation", estimate.get("evals"), measured.get("eval_seconds"), measured.get("evals")),
            ("save", "checkpoints", estimate.get("saves"), measured.get("save_seconds"), measured.get("saves"))):
        if count and done and seconds is not None and parts.get(part) is not None:
            print(f"    each {label:<5} actual {seconds / done:6.3f} s x {done}, "
                  f"estimated {parts[part] / count:6.3f} s x {count}")


def _summary(results: list) -> None:
    queued = [r["estimate"]["seconds"] / r["actual"] for _, r in results if r["estimate"].get("seconds")]
    live = [r["eta"] / r["eta_actual"] for _, r in results]
    for label, ratios in (("estimate at queue / actual", queued), (f"live ETA after {STEPS_IN} steps / actual", live)):
        if ratios:
            inside = sum(0.75 <= r <= 1.25 for r in ratios)
            print(f"{label}: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}; "
                  f"{inside} of {len(ratios)} within ±25%")


if __name__ == "__main__":
    main()
