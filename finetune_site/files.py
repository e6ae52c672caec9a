"""Moving files between local disk and the configured storage (local or S3), in chunks."""

import shutil
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage

CHUNK = 1 << 20


def storage_put_dir(local_dir: Path, prefix: str, *, last: str | None = None) -> list[str]:
    """Copy every file under ``local_dir`` to storage under ``prefix``; return the names.

    ``last`` (a relative file name) is written after all the others, so its presence
    means the directory is complete (a manifest).
    """
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local_dir).as_posix() == last)
    names = []
    for path in files:
        relative = path.relative_to(local_dir).as_posix()
        names.append(storage_put_file(path, f"{prefix.rstrip('/')}/{relative}"))
    return names


def storage_put_file(path: Path, name: str) -> str:
    """Store one local file as ``name``, replacing what was there."""
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(path, "rb") as handle:
        return default_storage.save(name, File(handle, name=Path(name).name))


def storage_fetch(name: str, target: Path) -> Path:
    """Copy a stored file to ``target`` on local disk, streaming."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(name, "rb") as source, open(target, "wb") as sink:
        shutil.copyfileobj(source, sink, CHUNK)
    return target


def storage_delete_all(names: list[str]) -> None:
    for name in names:
        if default_storage.exists(name):
            default_storage.delete(name)


def storage_is_s3() -> bool:
    return default_storage.__class__.__module__.startswith("storages.")
