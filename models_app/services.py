"""Writes for base models, fine-tuned models and their exports."""

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_delete_all, storage_fetch, storage_put_dir, storage_put_file
from finetune_site.ids import new_id
from models_app.models import BUILTIN_PREFIX, BaseModel, Export, FineTunedModel
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
