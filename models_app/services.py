"""Writes for base models and fine-tuned models."""

import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from finetune_site.errors import InvalidRequest
from finetune_site.files import storage_delete_all, storage_put_dir, storage_put_file
from finetune_site.ids import new_id
from models_app.models import BUILTIN_PREFIX, BaseModel, FineTunedModel

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


def model_artifact_name(*, model: FineTunedModel, artifact: str) -> str:
    """The storage name of a downloadable artifact of ``model``."""
    if artifact != "adapter":
        raise InvalidRequest(f"unknown artifact {artifact!r}; available: adapter", param="artifact")
    return f"{model.adapter_path}.zip"


def _zip_write(directory: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            archive.write(path, "adapter/" + path.relative_to(directory).as_posix())
    return target


def fine_tuned_model_delete(*, model: FineTunedModel) -> None:
    """Delete the model row, then its stored files once the deletion is committed."""
    names = list(model.artifact_files)
    with transaction.atomic():
        model.delete()
        transaction.on_commit(lambda: storage_delete_all(names))
