"""Local and stored files of datasets: temporary space, hashing, deleting what a row pointed at."""

import hashlib
import logging
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from datasets_app.models import Dataset
from finetune_site.files import CHUNK

log = logging.getLogger(__name__)


def tmp_dir() -> str:
    """Where uploads and preparations spill to disk (``FILE_UPLOAD_TEMP_DIR``)."""
    path = Path(settings.FILE_UPLOAD_TEMP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def files_delete(dataset: Dataset) -> None:
    names = [field.name for field in (dataset.file, dataset.training_file) if field.name]
    # a vision dataset's thumbnails (see services.images)
    names += [t["name"] for t in (dataset.stats or {}).get("thumbnails", []) if isinstance(t, dict) and t.get("name")]
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # storage hiccup: an orphan file is better than a hidden original error
            log.warning("could not delete %s", name, exc_info=True)
