"""Verified exports of a fine-tuned model or of one of its job's checkpoints: adapter, merged model or
GGUF for a language model, TorchScript or ONNX for an image classifier, offered only once the reloaded
export answers like its source. Only this module writes ``Export.status``."""

import logging
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_put_file
from finetune_site.ids import new_id
from finetune_site.status import status_transition
from jobs_app.models import Checkpoint
from jobs_app.services import checkpoint_fetch, vision_sample_images
from models_app import tasks
from models_app.base_models.services import VISION_FAMILIES, base_model_local_path
from models_app.cards import model_card_text
from models_app.models import EXPORT_TRANSITIONS, Export, FineTunedModel
from models_app.services.artifacts import model_files_fetch, zip_write
from models_app.signals import export_finished
from workers.export import GGUF_MODEL_TYPES, TEXT_KINDS, VISION_KINDS  # light: torch is imported when it runs

log = logging.getLogger(__name__)


def export_create(*, model: FineTunedModel | Checkpoint, kind: str, quantization: str | None = None) -> Export:
    """Queue a verified export of ``model`` (a fine-tuned model, or a checkpoint of a job: the weights it
    had at that step); an equal one that is queued, running or verified is reused.

    ``quantization`` applies to GGUF (f32, f16 or q8_0; default f16); adapter and merged
    exports keep float32 weights.
    """
    kind, quantization = export_options_check(kind=kind, quantization=quantization, base_model=_source_base(model),
                                              adapter=_source_adapter(model))
    with transaction.atomic():
        source = {"checkpoint" if isinstance(model, Checkpoint) else "model": model}
        existing = (Export.objects.select_for_update().filter(**source, kind=kind, quantization=quantization)
                    .exclude(status=Export.Status.FAILED).first())
        if existing:
            return existing
        export = Export.objects.create(id=new_id("export", 16), **source, kind=kind, quantization=quantization)
        transaction.on_commit(lambda: tasks.export_run.delay(export.id))
    return export


def export_options_check(*, kind, quantization, base_model, adapter: str) -> tuple[str, str]:
    """(kind, quantization) of an export of a model of ``base_model`` trained with ``adapter``, checked and
    defaulted; a 400 names ``kind`` or ``quantization``."""
    if kind not in Export.Kind.values:
        raise InvalidRequest(f"kind must be one of {', '.join(Export.Kind.values)}", param="kind")
    kinds = export_kinds(base_model)
    if kind not in kinds:
        what = "an image classifier" if kinds == VISION_KINDS else "a language model"
        raise InvalidRequest(f"{kind} does not apply to {what} ({base_model.name}); it exports as "
                             f"{' or '.join(kinds)}", param="kind")
    if kind == Export.Kind.GGUF:
        quantization = quantization or Export.Quantization.F16
        if quantization not in Export.Quantization.values:
            raise InvalidRequest(f"quantization must be one of {', '.join(Export.Quantization.values)}",
                                 param="quantization")
        if base_model.family not in GGUF_MODEL_TYPES:
            raise InvalidRequest(f"GGUF export supports Llama-family models, not {base_model.family!r}",
                                 param="kind")
    elif quantization not in (None, "", Export.Quantization.F32):
        raise InvalidRequest(f"a {kind} export keeps float32 weights; quantization applies to gguf only",
                             param="quantization")
    else:
        quantization = Export.Quantization.F32
    if kind == Export.Kind.ADAPTER and adapter == "full":
        raise InvalidRequest("this model was fully fine-tuned and has no adapter; export it merged or as gguf",
                             param="kind")
    return kind, quantization


def export_kinds(base_model) -> tuple[str, ...]:
    """The kinds a model of ``base_model`` exports as: TorchScript and ONNX for an image classifier
    (``cnn`` or a vision backbone), adapter, merged and GGUF for a language model."""
    return VISION_KINDS if base_model.family in VISION_FAMILIES else TEXT_KINDS


def export_run(*, export_id: str) -> Export | None:
    """Write, verify and store one export; mark it verified, or failed with the reason.

    Runs where the adapter is not on local disk: its files come from storage, the result
    goes back to storage (a zip of the directory, or the .gguf file).
    """
    export = _export_claim(export_id)
    if export is None:
        return None
    # a directory of this run's own: a redelivered export may run twice at once (a running one is taken
    # again), and one run's cleanup must not empty the other's files before it zips them
    (Path(settings.WORK_DIR) / "exports").mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{export.id}-", dir=Path(settings.WORK_DIR) / "exports"))
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
    """The export, now running; None when it is gone or finished (never redone). A running one is
    taken again: tasks are acknowledged late, so a worker that died mid-export gets it redelivered."""
    try:
        status_transition(Export, export_id, Export.Status.RUNNING, rules=EXPORT_TRANSITIONS)
    except (Conflict, Export.DoesNotExist):
        return None
    return Export.objects.select_related("model__base_model", "checkpoint__job__base_model").get(pk=export_id)


def _source_base(source: FineTunedModel | Checkpoint):
    return source.job.base_model if isinstance(source, Checkpoint) else source.base_model


def _source_adapter(source: FineTunedModel | Checkpoint) -> str:
    """lora, qlora or full: how the source was trained."""
    if isinstance(source, Checkpoint):
        return (source.job.hyperparameters or {}).get("adapter") or "lora"
    return source.adapter


def _source_fetch(source: FineTunedModel | Checkpoint, target: Path) -> Path:
    """The source's adapter (or full model) files in ``target``: a model's stored files, or a checkpoint's
    weights (without the optimizer state)."""
    if isinstance(source, FineTunedModel):
        return model_files_fetch(source, target)
    if checkpoint_fetch(checkpoint=source, target=target, weights_only=True) is None:
        raise FileNotFoundError(f"the checkpoint {source.fine_tuned_model_checkpoint} was never completely stored")
    return target


def _export_engine_run(export: Export, workdir: Path):
    from workers.events import Progress
    from workers.export import ExportConfig, run_export

    source = _source_fetch(export.source, workdir / "source")
    vision = export.kind in VISION_KINDS  # the classifier's directory is the source; no base model is read
    config = ExportConfig(base_model_path="" if vision else base_model_local_path(_source_base(export.source)),
                          adapter_path=str(source), output_dir=str(workdir / "out"), kind=export.kind,
                          quantization=export.quantization,
                          model_card=model_card_text(export.model) if export.model else "",
                          **(_sample_images(export.source.job, workdir / "images") if vision else {}))

    def emit(event) -> None:
        if isinstance(event, Progress):
            Export.objects.filter(pk=export.pk).update(progress=event.step * 100 // event.total_steps)

    return run_export(config, emit)


def _sample_images(job, workdir: Path) -> dict:
    """The images a TorchScript or ONNX export is checked on: a few of its job's held-out images (random
    pixels when the dataset's files are gone)."""
    try:
        archive, name, images = vision_sample_images(job, workdir)
    except Exception:
        log.warning("job %s: no images of its dataset to check an export on; random pixels instead", job.id,
                    exc_info=True)
        return {}
    return {"images_archive": archive, "images_archive_name": name, "images": images}


def _export_store(export: Export, path: Path, workdir: Path) -> str:
    # a checkpoint's exports sit with its files, so they go when the checkpoint's files go
    prefix = (f"{export.checkpoint.storage_path}/exports/{export.id}" if export.checkpoint_id
              else f"models/{export.model_id.replace(':', '_')}/exports/{export.id}")
    if path.is_file():
        return storage_put_file(path, f"{prefix}{path.suffix}")
    archive = zip_write(path, workdir / f"{export.id}.zip", folder=export.kind)
    return storage_put_file(archive, f"{prefix}.zip")


def _export_finish(export: Export, *, status: str, error: str = "", details: dict | None = None,
                   storage_path: str = "", size_bytes: int = 0) -> Export:
    with transaction.atomic():
        export = status_transition(Export, export.id, status, rules=EXPORT_TRANSITIONS, error=error,
                                   verification=details or {}, storage_path=storage_path, size_bytes=size_bytes,
                                   progress=100, finished_at=timezone.now())
        export_finished.send(sender=Export, export=export)
    return export
