"""Evaluations: a model (and its base, on the same rows) scored on a dataset; at the end of a job,
the best checkpoint marked and the promotion gate applied. Only this module writes
``Evaluation.status``."""

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from datasets_app.models import Dataset
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from finetune_site.ids import new_id
from finetune_site.nul_guard import nul_replaced
from finetune_site.status import status_transition
from jobs_app.services import checkpoint_fetch, job_event_add, job_metrics_add
from models_app import tasks
from models_app.base_models.models import BaseModel
from models_app.base_models.services import base_model_local_path
from models_app.models import EVALUATION_TRANSITIONS, Evaluation, FineTunedModel
from models_app.services.artifacts import model_files_fetch
from models_app.services.cards import model_card_evaluations_refresh
from models_app.services.registry import model_promote
from models_app.signals import evaluation_finished

log = logging.getLogger(__name__)


MAX_EVAL_ROWS = 1000
MAX_EVAL_NEW_TOKENS = 512


def evaluation_create(*, owner, model: BaseModel | FineTunedModel, dataset, max_rows: int = 100,
                      max_new_tokens: int = 32, compare_base: bool = True, checkpoints: bool = False,
                      kind: str = Evaluation.Kind.ON_DEMAND) -> Evaluation:
    """Queue an evaluation of ``model`` (and of its base, on the same rows) on ``dataset``."""
    if dataset.status != Dataset.Status.READY:
        raise InvalidRequest(f"{dataset.id} ({dataset.filename}) is {dataset.status}, not ready", param="file")
    evaluation_limits_check(max_rows=max_rows, max_new_tokens=max_new_tokens)
    tuned = model if isinstance(model, FineTunedModel) else None
    if checkpoints and (tuned is None or not tuned.job.checkpoints.exists()):
        raise InvalidRequest("checkpoints applies to a fine-tuned model whose job saved checkpoints",
                             param="checkpoints")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            id=new_id("eval", 16), owner=owner, project_id=dataset.project_id, model=tuned,
            base_model=tuned.base_model if tuned else model,
            dataset=dataset, kind=kind, compare_base=compare_base or tuned is None, checkpoints=checkpoints,
            max_rows=max_rows, max_new_tokens=max_new_tokens)
        transaction.on_commit(lambda: tasks.evaluation_run.delay(evaluation.id))
    return evaluation


def evaluation_limits_check(*, max_rows, max_new_tokens) -> None:
    """An evaluation's row and answer limits; a 400 names the one out of range."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or not 1 <= max_rows <= MAX_EVAL_ROWS:
        raise InvalidRequest(f"max_rows must be 1..{MAX_EVAL_ROWS}", param="max_rows")
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
            or not 0 <= max_new_tokens <= MAX_EVAL_NEW_TOKENS):
        raise InvalidRequest(f"max_new_tokens must be 0..{MAX_EVAL_NEW_TOKENS}", param="max_new_tokens")


def evaluation_for_job(*, model: FineTunedModel) -> Evaluation | None:
    """At the end of a job with a validation file: compare base and tuned on it (then apply the gate)."""
    job = model.job
    if job.validation_dataset is None:
        return None
    return evaluation_create(owner=model.owner, model=model, dataset=job.validation_dataset,
                             kind=Evaluation.Kind.AUTO, checkpoints=job.evaluate_checkpoints,
                             max_rows=settings.EVAL_MAX_ROWS, max_new_tokens=settings.EVAL_MAX_NEW_TOKENS)


def evaluation_run(*, evaluation_id: str) -> Evaluation | None:
    """Score the targets, store metrics and per-row outputs; then mark the best checkpoint and apply the gate."""
    evaluation = _evaluation_claim(evaluation_id)
    if evaluation is None:
        return None
    workdir = Path(settings.WORK_DIR) / "evaluations" / evaluation.id
    try:
        result = _evaluation_engine_run(evaluation, workdir)
    except Exception as exc:
        log.exception("evaluation %s failed", evaluation.id)
        _evaluation_finish(evaluation, status=Evaluation.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        return evaluation
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _evaluation_finish(evaluation, status=Evaluation.Status.SUCCEEDED, metrics=result.metrics,
                       rows=nul_replaced(result.rows),
                       rows_evaluated=result.rows_evaluated, classification=result.classification)
    return evaluation


def _evaluation_claim(evaluation_id: str) -> Evaluation | None:
    """The evaluation, now running; None when gone or finished. A running one is taken again: a
    worker that died mid-evaluation gets its (late-acknowledged) task redelivered."""
    try:
        status_transition(Evaluation, evaluation_id, Evaluation.Status.RUNNING, rules=EVALUATION_TRANSITIONS,
                          started_at=timezone.now())
    except (Conflict, Evaluation.DoesNotExist):
        return None
    return Evaluation.objects.select_related("model__job", "base_model", "dataset").get(pk=evaluation_id)


def _evaluation_engine_run(evaluation: Evaluation, workdir: Path):
    from workers.evaluation import EvalConfig, EvalTarget, run_evaluation
    from workers.events import Progress

    data = storage_fetch(evaluation.dataset.training_file_name, workdir / "data.jsonl")
    targets, tokenizer_path = [], None
    if evaluation.compare_base:
        targets.append(EvalTarget("base"))
    if evaluation.model:
        tuned = model_files_fetch(evaluation.model, workdir / "tuned")
        targets.append(EvalTarget("tuned", str(tuned)))
        tokenizer_path = str(tuned) if (tuned / "tokenizer_config.json").exists() else None
        if evaluation.checkpoints:
            targets += [EvalTarget(f"checkpoint-{c.step}", str(path)) for c, path in
                        _checkpoints_fetch(evaluation.model.job, workdir / "checkpoints")]
    config = EvalConfig(base_model_path=base_model_local_path(evaluation.base_model), data_file=str(data),
                        targets=tuple(targets), tokenizer_path=tokenizer_path, max_rows=evaluation.max_rows,
                        max_new_tokens=evaluation.max_new_tokens)

    def emit(event) -> None:
        if isinstance(event, Progress):
            Evaluation.objects.filter(pk=evaluation.pk).update(progress=event.step * 100 // event.total_steps)

    return run_evaluation(config, emit)


def _checkpoints_fetch(job, target: Path) -> list:
    """The job's complete checkpoints (manifest written), weights only: no optimizer state."""
    found = []
    for checkpoint in job.checkpoints.order_by("step"):
        directory = checkpoint_fetch(checkpoint=checkpoint, target=target / f"step-{checkpoint.step}",
                                     weights_only=True)
        if directory is not None:
            found.append((checkpoint, directory))
    return found


def _evaluation_finish(evaluation: Evaluation, *, status: str, error: str = "", **fields) -> None:
    with transaction.atomic():
        evaluation = status_transition(Evaluation, evaluation.id, status, rules=EVALUATION_TRANSITIONS, error=error,
                                       progress=100, finished_at=timezone.now(), **fields)
        if evaluation.model and evaluation.checkpoints and status == Evaluation.Status.SUCCEEDED:
            _checkpoint_best_mark(evaluation)
        if evaluation.model and evaluation.kind == Evaluation.Kind.AUTO:
            _gate_apply(evaluation)
            _pace_record(evaluation)
        evaluation_finished.send(sender=Evaluation, evaluation=evaluation)
        if evaluation.model and status == Evaluation.Status.SUCCEEDED:
            model_card_evaluations_refresh(model=evaluation.model)


def _pace_record(evaluation: Evaluation) -> None:
    """How long a row took per target, kept on the job: the next jobs' estimates read it."""
    scored = evaluation.rows_evaluated * max(1, len(evaluation.metrics))
    if evaluation.status != Evaluation.Status.SUCCEEDED or not scored or not evaluation.started_at:
        return
    seconds = (evaluation.finished_at - evaluation.started_at).total_seconds()
    job_metrics_add(job_id=evaluation.model.job_id, values={
        "evaluation_row_seconds": round(seconds / scored, 4),
        "evaluation_answer_tokens": evaluation.max_new_tokens + 1})


def _checkpoint_best_mark(evaluation: Evaluation) -> None:
    from workers.evaluation import LOWER_IS_BETTER

    job = evaluation.model.job
    metric = (job.promotion_gate or {}).get("metric", "eval_loss")
    scores = {int(name.removeprefix("checkpoint-")): values.get(metric)
              for name, values in evaluation.metrics.items() if name.startswith("checkpoint-")}
    scores = {step: value for step, value in scores.items() if value is not None}
    if not scores:
        return
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(scores, key=lambda step: (scores[step], -step if pick is max else step))
    job.checkpoints.update(is_best=False)
    job.checkpoints.filter(step=best).update(is_best=True)
    _job_note(job, f"Best checkpoint by {metric}: step {best} ({scores[best]:.4g})", {"best_checkpoint": best})


def _gate_apply(evaluation: Evaluation) -> None:
    model = evaluation.model
    metrics = evaluation.metrics
    if evaluation.status == Evaluation.Status.SUCCEEDED:
        _job_note(model.job, "Evaluation on the validation file: " + _metrics_line(metrics),
                  {"evaluation": evaluation.id, "metrics": metrics})
    else:
        _job_note(model.job, f"Evaluation on the validation file failed: {evaluation.error}",
                  {"evaluation": evaluation.id}, level="warn")
    gate = model.job.promotion_gate
    if not gate:
        return
    if evaluation.status != Evaluation.Status.SUCCEEDED:
        decision = {**gate, "passed": False, "reason": f"the evaluation failed: {evaluation.error}"}
    else:
        decision = promotion_gate_decide(gate, metrics)
    _gate_decided(model, gate, {**decision, "evaluation": evaluation.id})


def vision_gate_apply(model) -> None:
    """A classifier's promotion gate, decided on the held-out evaluation its job made as it trained."""
    gate = model.job.promotion_gate
    if not gate:
        return
    held_out = (model.job.vision or {}).get("evaluation") or {}
    decision = promotion_gate_decide(gate, {"tuned": {gate["metric"]: held_out.get(gate["metric"])}})
    _gate_decided(model, gate, {**decision, "reason": decision["reason"] + " on the held-out images"})


def _gate_decided(model, gate: dict, decision: dict) -> None:
    model.promotion = decision
    model.save(update_fields=["promotion"])
    if decision["passed"]:
        model_promote(model=model, alias=gate["alias"], action="gate")
    verdict = f"promoted to {gate['alias']}" if decision["passed"] else "kept, not promoted"
    _job_note(model.job, f"Promotion gate: {decision['reason']}; {model.reference} {verdict}",
              {"promotion": model.promotion})


def _metrics_line(metrics: dict) -> str:
    parts = []
    for target in ("base", "tuned"):
        values = metrics.get(target)
        if values:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("eval_loss", "accuracy", "rougeL"))
            parts.append(f"{target}: {shown}")
    return "; ".join(parts) or "no metrics"


def _job_note(job, message: str, data: dict, level: str = "info") -> None:
    job_event_add(job_id=job.id, message=message, data=data, level=level)


def promotion_gate_decide(gate: dict, metrics: dict) -> dict:
    """Whether an evaluation's ``metrics`` pass a checked ``gate`` (``promotion_gate_check``): the gate with
    ``passed``, ``reason`` and the values compared."""
    from workers.evaluation import LOWER_IS_BETTER, improvement

    metric = gate["metric"]
    tuned, base = metrics.get("tuned", {}).get(metric), metrics.get("base", {}).get(metric)
    decision = {**gate, "tuned": tuned, "base": base}
    if tuned is None or (base is None and "threshold" not in gate):
        return {**decision, "passed": False,
                "reason": f"{metric} was not measured on the validation file (accuracy needs label-like answers, "
                          "generation metrics need prompts)"}
    if "threshold" in gate:
        lower = metric in LOWER_IS_BETTER
        passed = tuned <= gate["threshold"] if lower else tuned >= gate["threshold"]
        reason = f"{metric} {tuned:.4g} {'≤' if lower else '≥'} {gate['threshold']:.4g} required"
        return {**decision, "passed": passed, "reason": reason}
    gain = improvement(metric, base, tuned)
    reason = (f"{metric} {tuned:.4g} vs base {base:.4g}: {gain:+.1%} "
              f"(at least {gate['min_improvement']:+.1%} required)")
    return {**decision, "improvement": round(gain, 6), "passed": gain >= gate["min_improvement"], "reason": reason}
