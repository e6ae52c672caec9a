"""How long a job will take and how much memory it needs, before it runs."""

import logging
import math
import shutil
from pathlib import Path

from django.conf import settings

from datasets_app.models import Dataset, TokenStats
from datasets_app.services import token_stats_current
from jobs_app.models import FineTuneJob
from jobs_app.services.running import train_config
from models_app.base_models.models import BaseModel
from workers.loading import ModelLoadError

log = logging.getLogger(__name__)
CALIBRATE_BELOW_PARAMETERS = 100_000_000  # smaller models are measured on the worker when there is no history


def job_estimate(*, job: FineTuneJob) -> dict:
    """Tokens and steps from the data (tokenized as the trainer will); seconds and memory from
    past runs of the same base model and adapter, or a few measured steps for a small model."""
    from workers.estimate import calibrate, estimate, token_counts

    hp = job.hyperparameters
    workdir = Path(settings.WORK_DIR) / job.id / "estimate"
    try:
        config = train_config(job, workdir, resume=False)
        try:
            counts = token_counts(config.model_path, config.train_file, config.max_length, config.template)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {job.base_model.source!r}: {exc}") from exc
        throughput, basis = past_throughput(job.base_model, hp["adapter"]), "past_runs"
        if throughput is None and (job.base_model.parameters or 10**12) < CALIBRATE_BELOW_PARAMETERS:
            throughput, basis = _calibrate_quietly(calibrate, config), "calibration"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"tokens_per_epoch": counts.tokens, "trainable_tokens_per_epoch": counts.trainable,
              "truncated_rows": counts.truncated_rows, "basis": basis if throughput else "none"}
    if throughput:
        e = estimate(counts, throughput, n_epochs=hp["n_epochs"], batch_size=hp["batch_size"])
        result.update(tokens=e.tokens, steps=e.steps, seconds=e.seconds, peak_memory_bytes=e.peak_memory_bytes,
                      tokens_per_second=round(throughput.tokens_per_second, 1))
    else:
        result.update(tokens=counts.tokens * hp["n_epochs"], seconds=None, peak_memory_bytes=None,
                      steps=-(-counts.rows // hp["batch_size"]) * hp["n_epochs"])
    return result


def _calibrate_quietly(calibrate, config):
    """A failed measurement only costs the estimate; the run itself reports the real error."""
    try:
        return calibrate(config)
    except Exception:
        log.warning("calibration of %s failed", config.model_path, exc_info=True)
        return None


def past_throughput(base_model: BaseModel, adapter: str):
    """Median tokens/s and the largest peak memory of the last finished runs of this model and adapter."""
    from workers.estimate import Throughput

    past = (FineTuneJob.objects.filter(base_model=base_model, status=FineTuneJob.Status.SUCCEEDED,
                                       hyperparameters__adapter=adapter)
            .exclude(metrics={}).order_by("-finished_at").values_list("metrics", flat=True)[:5])
    speeds = sorted(m["tokens_per_second"] for m in past if m.get("tokens_per_second"))
    if not speeds:
        return None
    return Throughput(tokens_per_second=speeds[len(speeds) // 2],
                      peak_memory_bytes=max(m.get("peak_memory_bytes", 0) for m in past))


def job_estimate_draft(*, owner, dataset: Dataset, base_model: BaseModel, hyperparameters: dict) -> dict:
    """The wizard's estimate for a job not created yet, from what is stored (a read: nothing is
    queued). Tokens and steps come from the dataset's token statistics when they are counted
    (asked for when the wizard's model step is posted), a token per 4 bytes until then; seconds
    and peak memory from past runs of the same base model and adapter.

    ``seconds`` and ``peak_memory_bytes`` are None without such runs: the live page measures
    them from the first steps. ``tokens_basis`` says where the token count came from.
    """
    rows, epochs, batch = dataset.row_count, hyperparameters["n_epochs"], hyperparameters["batch_size"]
    max_length = hyperparameters["max_length"]
    steps_per_epoch = math.ceil(rows / batch) if rows else 0
    result = {"rows": rows, "steps_per_epoch": steps_per_epoch, "steps": steps_per_epoch * epochs,
              "tokens_basis": "bytes", "trainable_tokens": None}
    stats = token_stats_current(owner=owner, dataset=dataset, base_model=base_model,
                                template=hyperparameters.get("template", ""))
    if stats is not None and stats.status == TokenStats.Status.READY and stats.totals:
        scale = rows / len(stats.totals)  # a sample stands for every row
        kept = sum(min(total, max_length) for total in stats.totals)
        # truncation cuts the end, where the answer is: what survives of each target
        trainable = sum(max(0, min(target, max_length - (total - target)))
                        for total, target in zip(stats.totals, stats.targets, strict=True))
        tokens_per_epoch = round(kept * scale)
        result.update(tokens_basis="tokenizer", trainable_tokens=round(trainable * scale) * epochs)
    else:
        tokens_per_epoch = round(rows * min(dataset.byte_size / rows / 4, max_length)) if rows else 0
        result["stats_status"] = stats.status if stats is not None else "unavailable"
    result.update(tokens_per_epoch=tokens_per_epoch, tokens=tokens_per_epoch * epochs,
                  avg_tokens_per_row=round(tokens_per_epoch / rows) if rows else 0)
    return {**result, **_timing(result["tokens"], past_throughput(base_model, hyperparameters["adapter"]))}


def _timing(tokens: int, throughput) -> dict:
    if throughput is None or not throughput.tokens_per_second:
        return {"seconds": None, "peak_memory_bytes": None, "tokens_per_second": None, "basis": "none"}
    return {"seconds": round(tokens / throughput.tokens_per_second, 1),
            "peak_memory_bytes": throughput.peak_memory_bytes or None,
            "tokens_per_second": round(throughput.tokens_per_second, 1), "basis": "past_runs"}


def estimate_describe(estimate: dict) -> str:
    text = f"Estimate: {estimate['tokens']:,} tokens in {estimate['steps']:,} steps"
    if estimate.get("seconds") is not None:
        text += (f", about {estimate['seconds']:.0f} s of training, peak memory "
                 f"{estimate['peak_memory_bytes'] / 2**20:.0f} MiB (from {estimate['basis'].replace('_', ' ')})")
    return text
