"""Files the platform writes for a user (a job's step metrics): stored as any file is, ready at once,
under a purpose of their own so they are never taken for training data."""

import hashlib

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from accounts_app.selectors import project_acting
from datasets_app.models import RESULTS_PURPOSE, Dataset
from datasets_app.services.files import files_delete


def result_file_create(*, owner, filename: str, content: bytes, rows: int, project=None) -> Dataset:
    """Store ``content`` as a ready file of ``owner`` (purpose ``fine-tune-results``) in ``project``
    (default: the one ``owner`` acts in), downloadable through ``/v1/files/{id}/content``. ``rows``: its
    data rows, as the file object reports them."""
    dataset = Dataset(owner=owner, project=project or project_acting(owner), filename=filename, purpose=RESULTS_PURPOSE,
                      container="csv",
                      status=Dataset.Status.READY, progress=1.0, row_count=rows, byte_size=len(content),
                      sha256=hashlib.sha256(content).hexdigest(), validated_at=timezone.now())
    dataset.file.save(filename, ContentFile(content, name=filename), save=False)
    try:
        with transaction.atomic():
            dataset.save()
    except BaseException:
        files_delete(dataset)
        raise
    return dataset
