"""Local and stored files of datasets: temporary space, hashing, deleting what a row pointed at."""

import hashlib
import logging
from pathlib import Path

from django.conf import settings

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
    for field in (dataset.file, dataset.training_file):
        if field.name:
            try:
                field.delete(save=False)
            except Exception:  # storage hiccup: an orphan file is better than a hidden original error
                log.warning("could not delete %s", field.name, exc_info=True)
