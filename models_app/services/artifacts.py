"""A model's files in storage: what can be downloaded, zipping a directory, fetching the weights."""

import zipfile
from pathlib import Path

from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from jobs_app.models import Checkpoint
from models_app.models import Export, FineTunedModel

ARTIFACTS = ("adapter", "merged", "gguf-f32", "gguf-f16", "gguf-q8_0", "torchscript", "onnx")


def model_artifact_name(*, model: FineTunedModel, artifact: str) -> str:
    """The storage name of a downloadable artifact of ``model``."""
    return model_artifact_get(model=model, artifact=artifact)[0]


def model_artifact_get(*, model: FineTunedModel | Checkpoint, artifact: str) -> tuple[str, str]:
    """``(storage name, download file name)`` of a downloadable artifact of ``model`` (or of a checkpoint).

    ``adapter`` is the adapter the job saved (its verified export when there is one; a checkpoint's only
    by its verified export);
    ``merged``, ``gguf-<quantization>``, ``torchscript`` and ``onnx`` are the newest verified export of that kind.
    An export that is not verified (yet, or ever) is never offered.
    """
    if artifact not in ARTIFACTS:
        raise InvalidRequest(f"unknown artifact {artifact!r}; available: {', '.join(ARTIFACTS)}", param="artifact")
    verified = [e for e in model.exports.filter(status=Export.Status.VERIFIED) if e.artifact == artifact]
    if verified:
        return verified[0].storage_path, verified[0].filename
    if artifact == "adapter" and isinstance(model, FineTunedModel):
        return f"{model.adapter_path}.zip", f"{model.id.replace(':', '_')}-adapter.zip"
    name = model.fine_tuned_model_checkpoint if isinstance(model, Checkpoint) else model.id
    raise Conflict(f"model {name} has no verified {artifact} export; create one with "
                   f"POST /v1/registry/models/{name}/exports", param="artifact", code="export_not_verified")


def zip_write(directory: Path, target: Path, folder: str = "adapter", readme: str | None = None) -> Path:
    """Zip ``directory`` under ``folder/``; ``readme`` (the model card) becomes ``folder/README.md``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            name = path.relative_to(directory).as_posix()
            if readme is None or name != "README.md":
                archive.write(path, f"{folder}/{name}")
        if readme is not None:
            archive.writestr(f"{folder}/README.md", readme)
    return target


def zip_readme_replace(source: Path, target: Path, readme: str) -> Path:
    """A copy of the zip ``source`` whose ``<folder>/README.md`` is ``readme`` (the edited model card)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as new:
        entries = old.infolist()
        folder = entries[0].filename.split("/", 1)[0] if entries else "adapter"
        for entry in entries:
            if entry.filename != f"{folder}/README.md":
                new.writestr(entry, old.read(entry))
        new.writestr(f"{folder}/README.md", readme)
    return target


def model_files_fetch(model: FineTunedModel, target: Path) -> Path:
    """Copy the stored adapter (or full model) files of ``model`` into ``target``."""
    prefix = model.adapter_path.rstrip("/") + "/"
    for name in model.artifact_files:
        if name.startswith(prefix):
            storage_fetch(name, target / name.removeprefix(prefix))
    return target
