"""Writes for base models, fine-tuned models and their exports."""

import logging
import os
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
from models_app.models import BUILTIN_PREFIX, BaseModel, Export, FineTunedModel
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
    try:
        with transaction.atomic():
            return FineTunedModel.objects.create(
                id=model_id,
                owner=job.owner,
                job=job,
                base_model=job.base_model,
                name=suffix or job.base_model.name,
                method=job.hyperparameters.get("adapter", "lora"),
                adapter_path=prefix,
                artifact_files=names,
            )
    except Exception:
        storage_delete_all(names)
        raise


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
    """Delete the model row (and its exports), then their stored files once the deletion is committed."""
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
