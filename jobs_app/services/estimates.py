"""How long a job will take, part by part, and how much memory it needs, before it runs.

The parts: ``setup`` (loading the model and tokenizing, before the first step), ``training`` (the
steps), ``validation`` (passes over the validation file during training), ``checkpoints``,
``finishing`` (the final save, storing the weights, registering the version) and ``evaluation``
(base and tuned scored on the validation file after the job). Each comes from past runs of the
same base model and adapter, or, for a small model with no history, from a short measurement on
the worker (``workers.estimate.calibrate`` and ``generation_pace``).

The peak memory has its own basis (``memory_basis``, see ``job_memory_estimate``): on CPU workers the
formula fitted to measured CPU runs (``workers.estimate.cpu_memory_need``) unless a past run had the
same memory-shaping options.
"""

import logging
import shutil
import statistics
from pathlib import Path

from django.conf import settings

from datasets_app.models import Dataset, TokenStats
from datasets_app.services import token_stats_current
from finetune_site.humane import duration_text
from jobs_app.models import FineTuneJob
from jobs_app.services.fit import gpu_memory_largest, job_memory_need
from jobs_app.services.running import train_config
from models_app.base_models.models import BaseModel
from workers.loading import ModelLoadError

log = logging.getLogger(__name__)
CALIBRATE_BELOW_PARAMETERS = 100_000_000  # smaller models are measured on the worker when there is no history
PAST_RUNS = 5
# The options a run's peak memory depends on (with the base model, adapter and objective): a past run
# with the same ones measured this job's memory. lora_r and quantization matter only to their adapters.
MEMORY_OPTIONS = ("batch_size", "max_length", "gradient_checkpointing", "lora_r", "quantization", "devices",
                  "sharding", "padding_free", "num_generations", "max_completion_length")


def job_estimate(*, job: FineTuneJob) -> dict:
    """Tokens and steps from the data (tokenized as the trainer will); the time of every part and
    the peak memory from past runs of the same base model and adapter, or a short measurement."""
    from workers.estimate import calibrate, estimate, token_counts

    hp = job.hyperparameters
    workdir = Path(settings.WORK_DIR) / job.id / "estimate"
    try:
        config = train_config(job, workdir, resume=False)
        try:
            counts = token_counts(config.model_path, config.train_file, config.max_length, config.template)
            validation = (token_counts(config.model_path, config.validation_file, config.max_length, config.template)
                          if config.validation_file else None)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the tokenizer of {job.base_model.source!r}: {exc}") from exc
        throughput, basis = past_throughput(job.base_model, hp, objective=job.objective), "past_runs"
        small = (job.base_model.parameters or 10**12) < CALIBRATE_BELOW_PARAMETERS
        if throughput is None and small:
            throughput, basis = _quietly(calibrate, config), "calibration"
        evaluation = _evaluation_seconds(job, validation.rows if validation else 0, config=config, measure=small)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    schedule = _schedule(hp, job.objective, validation.tokens if validation else 0)
    memory, memory_basis = job_memory_estimate(base_model=job.base_model, hp=hp, objective=job.objective,
                                               measured=throughput.peak_memory_bytes if throughput else None,
                                               measured_basis=basis)
    result = {"tokens_per_epoch": counts.tokens, "trainable_tokens_per_epoch": counts.trainable,
              "truncated_rows": counts.truncated_rows, "validation_tokens": schedule.validation_tokens,
              "basis": basis if throughput else "none", "peak_memory_bytes": memory, "memory_basis": memory_basis}
    if not throughput:
        steps = schedule.steps(counts.rows)
        return {**result, "tokens": counts.tokens * hp["n_epochs"], "steps": steps, "seconds": None,
                "parts": None, "evals": schedule.evals(steps), "saves": schedule.saves(steps)}
    e = estimate(counts, throughput, schedule)
    parts = {**e.parts, "finishing": _finishing_seconds(job.base_model, hp)}
    if evaluation is not None:
        parts["evaluation"] = evaluation
    return {**result, "tokens": e.tokens, "steps": e.steps,
            "tokens_per_second": round(throughput.tokens_per_second, 1),
            "step_seconds": round(throughput.step_seconds, 3), "parts": parts,
            "seconds": round(sum(parts.values()), 1), "evals": schedule.evals(e.steps),
            "saves": schedule.saves(e.steps)}


def job_memory_estimate(*, base_model: BaseModel, hp: dict, objective: str, measured: int | None = None,
                        measured_basis: str = "past_runs") -> tuple[int | None, str]:
    """(peak bytes, basis) of a job's memory: what ``peak_memory_bytes`` of its run will report.

    Where no GPU worker is registered (the job trains on CPU): the largest peak of past runs of this base
    model, adapter and objective with the same ``MEMORY_OPTIONS`` ("past_runs": they measured this very
    job), else for a supervised job the formula fitted to measured CPU runs ("formula", within 20% of
    benchmarks/memory_estimate.py's runs; it is fitted to supervised runs only), else ``measured``. On GPU
    workers, and for what the formula does not cover, ``measured``: the largest peak of past runs or the
    short calibration, as ``measured_basis`` says ("none" without either)."""
    if gpu_memory_largest() is None:
        same = [m.get("peak_memory_bytes") or 0 for m, past in _past_runs(base_model, hp["adapter"], objective)
                if all(past.get(name) == hp.get(name) for name in MEMORY_OPTIONS)]
        if any(same):
            return max(same), "past_runs"
        formula = (job_memory_need(hp, base_model=base_model, half_precision=False, device="cpu")
                   if objective == FineTuneJob.Objective.SUPERVISED else None)
        if formula:
            return formula, "formula"
    return (measured, measured_basis) if measured else (None, "none")


def _quietly(measure, *args, **kwargs):
    """A failed measurement only costs the estimate; the run itself reports the real error."""
    try:
        return measure(*args, **kwargs)
    except Exception:
        log.warning("measuring %s failed", getattr(measure, "__name__", measure), exc_info=True)
        return None


def _schedule(hp: dict, objective: str, validation_tokens: int):
    from workers.estimate import Schedule

    return Schedule(n_epochs=hp["n_epochs"], batch_size=hp["batch_size"], eval_steps=hp.get("eval_steps", 0),
                    save_steps=hp.get("save_steps", 0), validation_tokens=validation_tokens,
                    by_steps=objective == FineTuneJob.Objective.REINFORCEMENT,
                    gradient_accumulation_steps=hp.get("gradient_accumulation_steps", 1))


def _past_runs(base_model: BaseModel, adapter: str, objective: str | None = None) -> list[tuple[dict, dict]]:
    """(metrics, hyperparameters) of the last finished runs of this model and adapter (and objective)."""
    if base_model.pk is None:  # a remote provider's model no job named yet
        return []
    runs = FineTuneJob.objects.filter(base_model=base_model, status=FineTuneJob.Status.SUCCEEDED,
                                      hyperparameters__adapter=adapter)
    if objective is not None:
        runs = runs.filter(objective=objective)
    return list(runs.exclude(metrics={}).order_by("-finished_at").values_list("metrics", "hyperparameters")[:PAST_RUNS])


def _past_metrics(base_model: BaseModel, adapter: str) -> list[dict]:
    return [metrics for metrics, _ in _past_runs(base_model, adapter)]


def _answers_per_step(hp: dict) -> int:
    """What a step's time grows with: its rows, or for reinforcement the answers it samples."""
    return hp.get("batch_size", 1) * hp.get("num_generations", 1)


def past_throughput(base_model: BaseModel, hp: dict, *, objective: str):
    """The median paces and the largest peak memory of the last finished runs of this model, adapter and
    objective (each objective reads its rows its own way: DPO scores two answers against a reference,
    reinforcement samples). The step pace is scaled from their steps to this job's (rows or sampled
    answers per step). None without a run that measured a pace."""
    from workers.estimate import Throughput

    past = _past_runs(base_model, hp["adapter"], objective)
    speeds = [m.get("step_tokens_per_second") or m.get("tokens_per_second") for m, _ in past]
    per_answer = [m["step_seconds"] / _answers_per_step(h) for m, h in past if m.get("step_seconds")]
    if not any(speeds) and not per_answer:
        return None
    saves = [m["save_seconds"] / m["saves"] for m, _ in past if m.get("saves")]
    eval_speeds = [m["eval_tokens_per_second"] for m, _ in past if m.get("eval_tokens_per_second")]
    return Throughput(tokens_per_second=statistics.median(s for s in speeds if s) if any(speeds) else 0.0,
                      peak_memory_bytes=max(m.get("peak_memory_bytes", 0) for m, _ in past),
                      setup_seconds=_median(m.get("setup_seconds") for m, _ in past),
                      eval_tokens_per_second=statistics.median(eval_speeds) if eval_speeds else None,
                      save_seconds=statistics.median(saves) if saves else 0.0,
                      step_seconds=statistics.median(per_answer) * _answers_per_step(hp) if per_answer else 0.0)


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else 0.0


def _finishing_seconds(base_model: BaseModel, hp: dict) -> float:
    """After the last step (the final save, storing, registering): as past runs of this model and adapter
    measured it, else from the bytes the run will save."""
    past = [m.get("finishing_seconds") for m in _past_metrics(base_model, hp["adapter"])]
    if any(past):
        return round(_median(past), 1)
    from workers.estimate import Shape, finishing_seconds

    shape = Shape(**base_model.shape) if base_model.shape else None
    return round(finishing_seconds(parameters=base_model.parameters or 0, shape=shape, adapter=hp["adapter"],
                                   lora_r=hp.get("lora_r") or 16), 1)


def _evaluation_seconds(job: FineTuneJob, rows: int, *, config, measure: bool) -> float | None:
    """The evaluation after the job: each target (base, tuned, checkpoints) loads and answers every
    scored row, at the pace of past evaluations of this base model or of a few rows scored now."""
    if not rows:
        return None
    rows = min(rows, settings.EVAL_MAX_ROWS)
    targets = 2 + (job.hyperparameters["n_epochs"] if job.evaluate_checkpoints else 0)
    answer = settings.EVAL_MAX_NEW_TOKENS + 1  # generated tokens and the loss pass
    per_row = _past_row_seconds(job.base_model, answer)
    if per_row is not None:
        return round(targets * rows * per_row, 1)
    if not measure:
        return None
    from workers.estimate import evaluation_pace

    pace = _quietly(evaluation_pace, config.model_path, config.validation_file,
                    max_new_tokens=settings.EVAL_MAX_NEW_TOKENS)
    return round(targets * (pace[0] + rows * pace[1]), 1) if pace else None


def _past_row_seconds(base_model: BaseModel, answer: int) -> float | None:
    """Seconds per scored row and target in the evaluations after the last jobs of this base model
    (the registry records them on the job), scaled to ``answer`` tokens per row."""
    if base_model.pk is None:
        return None
    past = (FineTuneJob.objects.filter(base_model=base_model, metrics__has_key="evaluation_row_seconds")
            .order_by("-finished_at").values_list("metrics", flat=True)[:PAST_RUNS])
    paces = [m["evaluation_row_seconds"] / m.get("evaluation_answer_tokens", answer) for m in past]
    return statistics.median(paces) * answer if paces else None


def job_estimate_draft(*, owner, dataset: Dataset, base_model: BaseModel, hyperparameters: dict,
                       validation: Dataset | None = None, evaluate_checkpoints: bool = False,
                       objective: str = FineTuneJob.Objective.SUPERVISED) -> dict:
    """The wizard's estimate for a job not created yet, from what is stored (a read: nothing is
    queued). Tokens come from the datasets' token statistics when they are counted (asked for when
    the wizard's model step is posted), a token per 4 bytes until then; the time of each part from
    past runs of the same base model and adapter.

    ``seconds``, ``parts`` and ``peak_memory_bytes`` are None without such runs: the live page
    measures them from the first steps. ``tokens_basis`` says where the token count came from.
    """
    from workers.estimate import TokenCounts, estimate

    hp = hyperparameters
    counted = _tokens_per_epoch(owner, dataset, base_model, hp)
    checked = _tokens_per_epoch(owner, validation, base_model, hp) if validation else None
    schedule = _schedule(hp, objective, checked["tokens"] if checked else 0)
    steps = schedule.steps(dataset.row_count)
    result = {"rows": dataset.row_count, "steps_per_epoch": steps // hp["n_epochs"], "steps": steps,
              "tokens_basis": counted["basis"], "stats_status": counted["status"],
              "tokens_per_epoch": counted["tokens"], "tokens": counted["tokens"] * hp["n_epochs"],
              "trainable_tokens": counted["trainable"] * hp["n_epochs"] if counted["trainable"] is not None else None,
              "avg_tokens_per_row": round(counted["tokens"] / dataset.row_count) if dataset.row_count else 0}
    throughput = past_throughput(base_model, hp, objective=objective)
    memory, memory_basis = job_memory_estimate(base_model=base_model, hp=hp, objective=objective,
                                               measured=throughput.peak_memory_bytes if throughput else None)
    result = {**result, "peak_memory_bytes": memory, "memory_basis": memory_basis}
    if throughput is None:
        return {**result, "seconds": None, "parts": None, "tokens_per_second": None, "basis": "none"}
    counts = TokenCounts(rows=dataset.row_count, tokens=counted["tokens"], trainable=0, truncated_rows=0)
    parts = {**estimate(counts, throughput, schedule).parts, "finishing": _finishing_seconds(base_model, hp)}
    if validation:
        per_row = _past_row_seconds(base_model, settings.EVAL_MAX_NEW_TOKENS + 1)
        targets = 2 + (hp["n_epochs"] if evaluate_checkpoints else 0)
        rows = min(validation.row_count, settings.EVAL_MAX_ROWS)
        parts["evaluation"] = round(targets * rows * per_row, 1) if per_row is not None else None
    known = [seconds for seconds in parts.values() if seconds is not None]
    return {**result, "parts": parts, "seconds": round(sum(known), 1), "basis": "past_runs",
            "tokens_per_second": round(throughput.tokens_per_second, 1),
            "step_seconds": round(throughput.step_seconds, 3)}


def _tokens_per_epoch(owner, dataset: Dataset, base_model: BaseModel, hp: dict) -> dict:
    """A dataset's tokens per epoch (and those carrying loss) from its stored token counts under the
    job's tokenizer and template, truncated at max_length; a token per 4 bytes when not counted (and, for
    reinforcement, the answers sampled to each prompt at their longest)."""
    rows = dataset.row_count
    if "max_length" not in hp:
        sampled = rows * hp["num_generations"] * hp["max_completion_length"]
        return {"tokens": round(dataset.byte_size / 4) + sampled, "trainable": sampled, "basis": "bytes",
                "status": "unavailable"}
    max_length = hp["max_length"]
    stats = token_stats_current(owner=owner, dataset=dataset, base_model=base_model, template=hp.get("template", ""))
    if stats is None or stats.status != TokenStats.Status.READY or not stats.totals:
        tokens = round(rows * min(dataset.byte_size / rows / 4, max_length)) if rows else 0
        return {"tokens": tokens, "trainable": None, "basis": "bytes",
                "status": stats.status if stats is not None else "unavailable"}
    scale = rows / len(stats.totals)  # a sample stands for every row
    kept = sum(min(total, max_length) for total in stats.totals)
    # truncation cuts the end, where the answer is: what survives of each target
    trainable = sum(max(0, min(target, max_length - (total - target)))
                    for total, target in zip(stats.totals, stats.targets, strict=True))
    return {"tokens": round(kept * scale), "trainable": round(trainable * scale), "basis": "tokenizer",
            "status": stats.status}


def estimate_describe(estimate: dict) -> str:
    """One line for the job's log: the total and its parts."""
    what = (f"{estimate['images']:,} training images" if "images" in estimate else f"{estimate['tokens']:,} tokens")
    text = f"Estimate: {what} in {estimate['steps']:,} steps"
    if estimate.get("seconds") is not None:
        parts = ", ".join(f"{name} {duration_text(seconds)}" for name, seconds in estimate["parts"].items()
                          if seconds is not None)
        text += (f"; about {duration_text(estimate['seconds'])} in all ({parts}) "
                 f"(from {estimate['basis'].replace('_', ' ')})")
    if estimate.get("peak_memory_bytes"):
        text += (f"; peak memory about {estimate['peak_memory_bytes'] / 2**20:,.0f} MiB "
                 f"(from {MEMORY_BASES.get(estimate.get('memory_basis'), 'past runs')})")
    return text


MEMORY_BASES = {"formula": "the CPU memory formula", "past_runs": "past runs", "calibration": "calibration"}
