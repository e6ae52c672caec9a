"""Writes for base models, fine-tuned models and their exports."""

import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict, InvalidRequest, NotFound, ServerError, Unavailable
from finetune_site.files import storage_delete_all, storage_fetch, storage_put_dir, storage_put_file
from finetune_site.ids import new_id
from models_app.models import BUILTIN_PREFIX, AliasChange, BaseModel, Evaluation, Export, FineTunedModel, ModelAlias
from models_app.replies import ReplyGone, ReplySender, replies_collect, reply_channel_new, reply_receive
from models_app.selectors import model_public_id
from workers.export import GGUF_MODEL_TYPES  # light: the engine imports torch only when it runs

log = logging.getLogger(__name__)

TINY_LLAMA = "tiny-llama"


def base_model_builtin_ensure() -> BaseModel:
    """Make sure the built-in ``tiny-llama`` is registered (its files are built on first use)."""
    from workers.tiny_model import CHAT_TEMPLATE, PARAMETERS

    model, _ = BaseModel.objects.get_or_create(
        name=TINY_LLAMA,
        defaults={
            "source": BUILTIN_PREFIX + TINY_LLAMA,
            "family": "llama",
            "chat_template": CHAT_TEMPLATE,
            "context_length": 2048,
            "parameters": PARAMETERS,
        },
    )
    return model


def base_model_local_path(base_model: BaseModel) -> str:
    """Where the engine loads the model from: built-ins are built on first use, others as given."""
    if not base_model.is_builtin:
        return base_model.source
    from workers.tiny_model import tiny_model_build

    name = base_model.source.removeprefix(BUILTIN_PREFIX)
    if name != TINY_LLAMA:
        raise ValueError(f"unknown built-in model {name!r}")
    return str(tiny_model_build(Path(settings.BASE_MODELS_DIR) / name))


def fine_tuned_model_create(*, job, adapter_dir: Path) -> FineTunedModel:
    """Store the adapter files of ``job`` and register the model that owns them."""
    suffix = job.suffix or ""
    model_id = f"ft:{job.base_model.name}:{suffix}:{new_id('m', 8)[2:]}"
    prefix = f"models/{model_id.replace(':', '_')}/adapter"
    names = storage_put_dir(adapter_dir, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        names.append(storage_put_file(_zip_write(adapter_dir, Path(tmp) / "adapter.zip"), f"{prefix}.zip"))
    name = suffix or job.base_model.name
    try:
        with transaction.atomic():
            return FineTunedModel.objects.create(
                id=model_id,
                owner=job.owner,
                job=job,
                base_model=job.base_model,
                name=name,
                version=_version_next(job.owner, name),
                checkpoint=job.checkpoints.order_by("-step").first(),
                method=job.hyperparameters.get("adapter", "lora"),
                adapter_path=prefix,
                artifact_files=names,
            )
    except Exception:
        storage_delete_all(names)
        raise


def _version_next(owner, name: str) -> int:
    # Locks the name's versions so two jobs finishing together cannot both take the same number;
    # the very first version of a name is guarded by the unique constraint instead.
    versions = FineTunedModel.objects.select_for_update().filter(owner=owner, name=name)
    return max(versions.values_list("version", flat=True), default=0) + 1


ARTIFACTS = ("adapter", "merged", "gguf-f32", "gguf-f16", "gguf-q8_0")


def model_artifact_name(*, model: FineTunedModel, artifact: str) -> str:
    """The storage name of a downloadable artifact of ``model``."""
    return model_artifact_get(model=model, artifact=artifact)[0]


def model_artifact_get(*, model: FineTunedModel, artifact: str) -> tuple[str, str]:
    """``(storage name, download file name)`` of a downloadable artifact of ``model``.

    ``adapter`` is the adapter the job saved (its verified export when there is one);
    ``merged`` and ``gguf-<quantization>`` are the newest verified export of that kind.
    An export that is not verified (yet, or ever) is never offered.
    """
    if artifact not in ARTIFACTS:
        raise InvalidRequest(f"unknown artifact {artifact!r}; available: {', '.join(ARTIFACTS)}", param="artifact")
    verified = [e for e in model.exports.filter(status=Export.Status.VERIFIED) if e.artifact == artifact]
    if verified:
        return verified[0].storage_path, verified[0].filename
    if artifact == "adapter":
        return f"{model.adapter_path}.zip", f"{model.id.replace(':', '_')}-adapter.zip"
    raise Conflict(f"model {model.id} has no verified {artifact} export; create one with "
                   f"POST /v1/registry/models/{model.id}/exports", param="artifact", code="export_not_verified")


def _zip_write(directory: Path, target: Path, folder: str = "adapter") -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.write(path, f"{folder}/" + path.relative_to(directory).as_posix())
    return target


def fine_tuned_model_delete(*, model: FineTunedModel) -> None:
    """Delete the model row (and its exports), then their stored files once the deletion is committed.

    A version an alias points at is refused: move or roll back the alias first.
    """
    _aliases_refuse(model, "delete")
    names = list(model.artifact_files) + [e.storage_path for e in model.exports.all() if e.storage_path]
    with transaction.atomic():
        model.delete()
        transaction.on_commit(lambda: storage_delete_all(names))


# --- exports -------------------------------------------------------------------------------


def export_create(*, model: FineTunedModel, kind: str, quantization: str | None = None) -> Export:
    """Queue a verified export of ``model``; an equal one that is queued, running or verified is reused.

    ``quantization`` applies to GGUF (f32, f16 or q8_0; default f16); adapter and merged
    exports keep float32 weights.
    """
    if kind not in Export.Kind.values:
        raise InvalidRequest(f"kind must be one of {', '.join(Export.Kind.values)}", param="kind")
    if kind == Export.Kind.GGUF:
        quantization = quantization or Export.Quantization.F16
        if quantization not in Export.Quantization.values:
            raise InvalidRequest(f"quantization must be one of {', '.join(Export.Quantization.values)}",
                                 param="quantization")
        if model.base_model.family not in GGUF_MODEL_TYPES:
            raise InvalidRequest(f"GGUF export supports Llama-family models, not {model.base_model.family!r}",
                                 param="kind")
    elif quantization not in (None, "", Export.Quantization.F32):
        raise InvalidRequest(f"a {kind} export keeps float32 weights; quantization applies to gguf only",
                             param="quantization")
    else:
        quantization = Export.Quantization.F32
    if kind == Export.Kind.ADAPTER and model.method == "full":
        raise InvalidRequest("this model was fully fine-tuned and has no adapter; export it merged or as gguf",
                             param="kind")
    with transaction.atomic():
        existing = (Export.objects.select_for_update().filter(model=model, kind=kind, quantization=quantization)
                    .exclude(status=Export.Status.FAILED).first())
        if existing:
            return existing
        export = Export.objects.create(id=new_id("export", 16), model=model, kind=kind, quantization=quantization)
        transaction.on_commit(lambda: _export_run_task().delay(export.id))
    return export


def export_run(*, export_id: str) -> Export | None:
    """Write, verify and store one export; mark it verified, or failed with the reason.

    Runs where the adapter is not on local disk: its files come from storage, the result
    goes back to storage (a zip of the directory, or the .gguf file).
    """
    export = _export_claim(export_id)
    if export is None:
        return None
    workdir = Path(settings.WORK_DIR) / "exports" / export.id
    try:
        result = _export_engine_run(export, workdir)
        if not result.verified:
            return _export_finish(export, status=Export.Status.FAILED, error=result.error, details=result.details)
        storage_path = _export_store(export, Path(result.path), workdir)
        return _export_finish(export, status=Export.Status.VERIFIED, details=result.details,
                              storage_path=storage_path, size_bytes=result.size_bytes)
    except Exception as exc:
        log.exception("export %s failed", export.id)
        return _export_finish(export, status=Export.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _export_claim(export_id: str) -> Export | None:
    with transaction.atomic():
        export = Export.objects.select_for_update().select_related("model__base_model").filter(pk=export_id).first()
        # RUNNING too: tasks are acknowledged late, so a worker that died mid-export gets its task
        # redelivered, and the export would otherwise stay running forever. Finished ones are never redone.
        if export is None or export.status not in (Export.Status.PENDING, Export.Status.RUNNING):
            return None
        export.status = Export.Status.RUNNING
        export.save(update_fields=["status"])
        return export


def _export_engine_run(export: Export, workdir: Path):
    from workers.events import Progress
    from workers.export import ExportConfig, run_export

    model = export.model
    source = _model_files_fetch(model, workdir / "source")
    config = ExportConfig(base_model_path=base_model_local_path(model.base_model), adapter_path=str(source),
                          output_dir=str(workdir / "out"), kind=export.kind, quantization=export.quantization)

    def emit(event) -> None:
        if isinstance(event, Progress):
            Export.objects.filter(pk=export.pk).update(progress=event.step * 100 // event.total_steps)

    return run_export(config, emit)


def _model_files_fetch(model: FineTunedModel, target: Path) -> Path:
    """Copy the stored adapter (or full model) files of ``model`` into ``target``."""
    prefix = model.adapter_path.rstrip("/") + "/"
    for name in model.artifact_files:
        if name.startswith(prefix):
            storage_fetch(name, target / name.removeprefix(prefix))
    return target


def _export_store(export: Export, path: Path, workdir: Path) -> str:
    prefix = f"models/{export.model_id.replace(':', '_')}/exports/{export.id}"
    if path.is_file():
        return storage_put_file(path, f"{prefix}{path.suffix}")
    archive = _zip_write(path, workdir / f"{export.id}.zip", folder=export.kind)
    return storage_put_file(archive, f"{prefix}.zip")


def _export_finish(export: Export, *, status: str, error: str = "", details: dict | None = None,
                   storage_path: str = "", size_bytes: int = 0) -> Export:
    export.status = status
    export.error = error
    export.verification = details or {}
    export.storage_path = storage_path
    export.size_bytes = size_bytes
    export.progress = 100
    export.finished_at = timezone.now()
    export.save()
    return export


def _export_run_task():
    from models_app.tasks import export_run as task

    return task


# --- registry: versions, aliases, archive ---------------------------------------------------

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")


def model_promote(*, model: FineTunedModel, alias: str = "production", action: str = "promote") -> ModelAlias:
    """Point ``alias`` of the model's name at this version; the change is kept in the alias history."""
    _alias_check(alias)
    if model.archived_at:
        raise Conflict(f"{model.reference} is archived; unarchive it before giving it an alias", param="alias")
    with transaction.atomic():
        current = ModelAlias.objects.select_for_update().filter(owner=model.owner, name=model.name,
                                                                alias=alias).first()
        if current and current.model_id == model.id:
            return current
        previous = current.model if current else None
        current, _ = ModelAlias.objects.update_or_create(owner=model.owner, name=model.name, alias=alias,
                                                         defaults={"model": model})
        AliasChange.objects.create(owner=model.owner, name=model.name, alias=alias, model=model,
                                   previous=previous, action=action)
    return current


def alias_rollback(*, owner, name: str, alias: str, version: int | None = None) -> ModelAlias:
    """Move ``alias`` back: to ``version``, or to the newest earlier version it pointed at before."""
    current = ModelAlias.objects.filter(owner=owner, name=name, alias=alias).select_related("model").first()
    if current is None:
        raise InvalidRequest(f"{name} has no alias {alias!r}", param="alias", code="alias_not_found")
    target = _rollback_target(current, version)
    return model_promote(model=target, alias=alias, action="rollback")


def _rollback_target(current: ModelAlias, version: int | None) -> FineTunedModel:
    versions = FineTunedModel.objects.filter(owner=current.owner, name=current.name, archived_at__isnull=True)
    if version is not None:
        target = versions.filter(version=version).first()
        if target is None:
            raise InvalidRequest(f"{current.name} has no unarchived version {version}", param="version")
        return target
    earlier = (AliasChange.objects.filter(owner=current.owner, name=current.name, alias=current.alias,
                                          model__version__lt=current.model.version, model__archived_at__isnull=True)
               .exclude(action="rollback").select_related("model").order_by("-model__version").first())
    if earlier is None:
        raise Conflict(f"{current.alias} of {current.name} never pointed at an earlier version that still exists; "
                       "promote one by version instead", param="alias", code="nothing_to_roll_back")
    return earlier.model


def model_archive(*, model: FineTunedModel, archived: bool = True) -> FineTunedModel:
    """Archive (or bring back) a version: it stays downloadable but can get no alias."""
    if archived:
        _aliases_refuse(model, "archive")
    model.archived_at = timezone.now() if archived else None
    model.save(update_fields=["archived_at"])
    return model


def _aliases_refuse(model: FineTunedModel, action: str) -> None:
    aliases = sorted(model.aliases.values_list("alias", flat=True))
    if aliases:
        raise Conflict(f"{model.reference} is {', '.join(aliases)}; promote another version or roll the alias "
                       f"back before you {action} it", param="model", code="version_has_alias")


def _alias_check(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or re.fullmatch(r"v\d+", alias):
        raise InvalidRequest("alias must be lower-case letters, digits, - or _ (starting with a letter, up to 50), "
                             "and not v<number> (that names a version)", param="alias")


# --- promotion gate -------------------------------------------------------------------------


def promotion_gate_check(gate: dict | None, *, has_validation: bool) -> dict:
    """The normalised gate of a job: ``{metric, min_improvement | threshold, alias}``, or {} for none."""
    from workers.evaluation import METRICS

    if not gate:
        return {}
    if not isinstance(gate, dict):
        raise InvalidRequest("promotion_gate must be an object like {\"metric\": \"eval_loss\", "
                             "\"min_improvement\": 0.05}", param="promotion_gate")
    unknown = set(gate) - {"metric", "min_improvement", "threshold", "alias"}
    if unknown:
        raise InvalidRequest(f"promotion_gate has unknown keys {sorted(unknown)}", param="promotion_gate")
    metric = gate.get("metric", "eval_loss")
    if metric not in METRICS:
        raise InvalidRequest(f"promotion_gate.metric must be one of {', '.join(METRICS)}",
                             param="promotion_gate.metric")
    if not has_validation:
        raise InvalidRequest("a promotion gate compares base and tuned on the validation file: give validation_file",
                             param="promotion_gate")
    normal = {"metric": metric, "alias": gate.get("alias", "production")}
    _alias_check(normal["alias"])
    for key in ("min_improvement", "threshold"):
        if gate.get(key) is not None:
            if isinstance(gate[key], bool) or not isinstance(gate[key], int | float):
                raise InvalidRequest(f"promotion_gate.{key} must be a number", param=f"promotion_gate.{key}")
            normal[key] = float(gate[key])
    if "threshold" not in normal:
        normal.setdefault("min_improvement", 0.0)
    return normal


def _gate_decide(gate: dict, metrics: dict) -> dict:
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


# --- evaluations ----------------------------------------------------------------------------

MAX_EVAL_ROWS = 1000
MAX_EVAL_NEW_TOKENS = 512


def evaluation_create(*, owner, model: BaseModel | FineTunedModel, dataset, max_rows: int = 100,
                      max_new_tokens: int = 32, compare_base: bool = True, checkpoints: bool = False,
                      kind: str = Evaluation.Kind.ON_DEMAND) -> Evaluation:
    """Queue an evaluation of ``model`` (and of its base, on the same rows) on ``dataset``."""
    from datasets_app.models import Dataset

    if dataset.status != Dataset.Status.READY:
        raise InvalidRequest(f"{dataset.id} ({dataset.filename}) is {dataset.status}, not ready", param="file")
    if not 1 <= max_rows <= MAX_EVAL_ROWS:
        raise InvalidRequest(f"max_rows must be 1..{MAX_EVAL_ROWS}", param="max_rows")
    if not 0 <= max_new_tokens <= MAX_EVAL_NEW_TOKENS:
        raise InvalidRequest(f"max_new_tokens must be 0..{MAX_EVAL_NEW_TOKENS}", param="max_new_tokens")
    tuned = model if isinstance(model, FineTunedModel) else None
    if checkpoints and (tuned is None or not tuned.job.checkpoints.exists()):
        raise InvalidRequest("checkpoints applies to a fine-tuned model whose job saved checkpoints",
                             param="checkpoints")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            id=new_id("eval", 16), owner=owner, model=tuned, base_model=tuned.base_model if tuned else model,
            dataset=dataset, kind=kind, compare_base=compare_base or tuned is None, checkpoints=checkpoints,
            max_rows=max_rows, max_new_tokens=max_new_tokens)
        transaction.on_commit(lambda: _evaluation_run_task().delay(evaluation.id))
    return evaluation


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
    _evaluation_finish(evaluation, status=Evaluation.Status.SUCCEEDED, metrics=result.metrics, rows=result.rows,
                       rows_evaluated=result.rows_evaluated, classification=result.classification)
    return evaluation


def _evaluation_claim(evaluation_id: str) -> Evaluation | None:
    with transaction.atomic():
        evaluation = (Evaluation.objects.select_for_update(of=("self",))
                      .select_related("model__job", "base_model", "dataset").filter(pk=evaluation_id).first())
        # RUNNING too: a worker that died mid-evaluation gets its (late-acknowledged) task redelivered.
        if evaluation is None or evaluation.is_finished:
            return None
        evaluation.status = Evaluation.Status.RUNNING
        evaluation.save(update_fields=["status"])
        return evaluation


def _evaluation_engine_run(evaluation: Evaluation, workdir: Path):
    from workers.evaluation import EvalConfig, EvalTarget, run_evaluation
    from workers.events import Progress

    data = storage_fetch(evaluation.dataset.training_file_name, workdir / "data.jsonl")
    targets, tokenizer_path = [], None
    if evaluation.compare_base:
        targets.append(EvalTarget("base"))
    if evaluation.model:
        tuned = _model_files_fetch(evaluation.model, workdir / "tuned")
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
    from jobs_app.services import checkpoint_fetch

    found = []
    for checkpoint in job.checkpoints.order_by("step"):
        directory = checkpoint_fetch(checkpoint=checkpoint, target=target / f"step-{checkpoint.step}",
                                     weights_only=True)
        if directory is not None:
            found.append((checkpoint, directory))
    return found


def _evaluation_finish(evaluation: Evaluation, *, status: str, error: str = "", **fields) -> None:
    with transaction.atomic():
        for key, value in fields.items():
            setattr(evaluation, key, value)
        evaluation.status, evaluation.error = status, error
        evaluation.progress, evaluation.finished_at = 100, timezone.now()
        evaluation.save()
        if evaluation.model and evaluation.checkpoints and status == Evaluation.Status.SUCCEEDED:
            _checkpoint_best_mark(evaluation)
        if evaluation.model and evaluation.kind == Evaluation.Kind.AUTO:
            _gate_apply(evaluation)


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
        decision = _gate_decide(gate, metrics)
    model.promotion = {**decision, "evaluation": evaluation.id}
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
    from jobs_app.services import job_event_add

    job_event_add(job_id=job.id, message=message, data=data, level=level)


def _evaluation_run_task():
    from models_app.tasks import evaluation_run as task

    return task


# --- inference -----------------------------------------------------------------------------

NO_INFERENCE_WORKER = ("no inference worker answered within {seconds}s: start one on the `inference` queue "
                       "(celery -A finetune_site worker -Q inference -c 1), or retry if it is busy")


def chat_completion_queue(*, model: BaseModel | FineTunedModel, config: dict, reply_channel: str,
                          tag: str = "") -> None:
    """Ask the inference worker for a chat reply of ``model``, sent to ``reply_channel`` as it comes.

    ``config`` holds ``workers.inference.GenerateConfig``'s fields. The task expires when the
    caller stops waiting (INFERENCE_TIMEOUT_SECONDS): a worker that gets to it later skips it.
    """
    _chat_completion_run_task().apply_async(args=[model_public_id(model), config, reply_channel, tag],
                                            expires=settings.INFERENCE_TIMEOUT_SECONDS)


def chat_completion_start(*, model: BaseModel | FineTunedModel, config: dict) -> tuple[str, dict]:
    """Queue a chat reply and wait until the worker starts it: ``(reply channel, start message)``.

    Raises ``Unavailable`` when no inference worker answers in time, and the worker's error
    (``chat_completion_error``) when it cannot start: a prompt too long, a model that does not load.
    """
    channel = reply_channel_new()
    chat_completion_queue(model=model, config=config, reply_channel=channel)
    first = _reply_next(channel)
    if first["type"] == "inference.error":
        raise chat_completion_error(first)
    return channel, first


def chat_completion_finish(*, reply_channel: str) -> dict:
    """Wait for the rest of a started reply and return its ``done`` message (the whole text, usage)."""
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        last = async_to_sync(replies_collect)(reply_channel, seconds)[-1]
    except TimeoutError:
        raise Unavailable(f"the inference worker stopped answering for {seconds}s",
                          code="inference_unavailable") from None
    if last["type"] == "inference.error":
        raise chat_completion_error(last)
    return last


def chat_completion_error(message: dict) -> InvalidRequest:
    """The API error for an ``inference.error`` message."""
    code, text, param = message.get("code") or "inference_failed", message.get("message", ""), message.get("param")
    if code == "model_not_found":
        return NotFound(text, param=param, code=code)
    if code in ("context_length_exceeded", "invalid_request"):
        return InvalidRequest(text, param=param, code=code)
    if code == "inference_unavailable":
        return Unavailable(text, code=code)
    return ServerError(text, param=param, code=code)


def _reply_next(channel: str) -> dict:
    seconds = settings.INFERENCE_TIMEOUT_SECONDS
    try:
        return async_to_sync(reply_receive)(channel, seconds)
    except TimeoutError:
        raise Unavailable(NO_INFERENCE_WORKER.format(seconds=seconds), code="inference_unavailable") from None


_inference_models = None  # this worker process's ModelCache, made on first use


def chat_completion_run(*, model_id: str, config: dict, reply_channel: str, tag: str = "") -> None:
    """Generate one chat reply here (in the inference worker) and send it to ``reply_channel``.

    Sends ``start`` (with whether the model was already loaded), the text piece by piece, then
    ``done``; or an ``error`` message with the reason instead. The model stays loaded for the
    next request; a fine-tuned model's files are fetched from storage once.
    """
    from workers.inference import ContextLengthExceeded, GenerateConfig, generate

    with ReplySender(reply_channel, tag) as reply:
        try:
            generate_config = GenerateConfig(**config)
        except (TypeError, ValueError, KeyError) as exc:
            reply.send("error", message=f"invalid request: {exc}", code="invalid_request", param=None)
            return
        try:
            loaded, hit = _inference_model_get(model_id)
            result = generate(loaded, generate_config, lambda text: reply.send("delta", text=text),
                              on_start=lambda tokens: reply.send("start", cache="hit" if hit else "miss",
                                                                 prompt_tokens=tokens))
            reply.send("done", **asdict(result))
        except ReplyGone:
            log.info("nobody reads %s any more; stopped generating", reply_channel)
        except ContextLengthExceeded as exc:
            reply.send("error", message=str(exc), code="context_length_exceeded", param="messages")
        except _ModelGone:
            reply.send("error", message=f"the model {model_id!r} no longer exists", code="model_not_found",
                       param="model")
        except Exception as exc:
            log.exception("chat completion with %s failed", model_id)
            reply.send("error", message=f"the model could not generate: {type(exc).__name__}: {exc}",
                       code="inference_failed", param=None)


class _ModelGone(Exception):
    pass


def _inference_model_get(model_id: str):
    """``(loaded model, already loaded)`` for a base model name or a fine-tuned model id."""
    global _inference_models
    from workers.inference import ModelCache

    if _inference_models is None:
        _inference_models = ModelCache(size=settings.INFERENCE_MODELS_KEPT)
    tuned = FineTunedModel.objects.select_related("base_model").filter(pk=model_id).first()
    base = tuned.base_model if tuned else BaseModel.objects.filter(name=model_id).first()
    if base is None:
        raise _ModelGone(model_id)
    adapter = str(_inference_files(tuned)) if tuned else None
    return _inference_models.get(base_model_local_path(base), adapter)


def _inference_files(model: FineTunedModel) -> Path:
    """The model's adapter (or full weights) on local disk, fetched from storage on first use."""
    target = Path(settings.WORK_DIR) / "inference" / model.id.replace(":", "_")
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fetch-"))
    try:
        _model_files_fetch(model, staging)
        (staging / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)  # an earlier fetch that did not complete
        os.replace(staging, target)  # appears whole, or not at all
    except OSError:
        if not (target / ".complete").exists():  # not another process that won the race
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _chat_completion_run_task():
    from models_app.tasks import chat_completion_run as task

    return task
