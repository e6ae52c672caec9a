"""Datasets made from a hub dataset's split: created here, fetched into storage by the
``dataset_validate`` task (``hub_source_fetch``) before the same check every upload gets."""

import hashlib
import re
from pathlib import Path

from django.core.files import File
from django.db import transaction

from accounts_app.selectors import project_acting
from datasets_app import tasks
from datasets_app.models import Dataset
from finetune_site.errors import InvalidRequest
from workers.hub import HUB_ID, SPLIT, hub_dataset_fetch

HUB_OPERATION = "hub"


def dataset_hub_create(*, owner, hub_id: str, split: str = "train", revision: str = "") -> Dataset:
    """A dataset to be fetched from split ``split`` of hub dataset ``hub_id`` (at ``revision``):
    stored ``uploaded`` with nothing in it yet; the ``dataset_validate`` task fetches the rows and
    checks them. A bad id, split or revision raises ``InvalidRequest`` naming it; nothing is stored."""
    if not HUB_ID.match(hub_id or ""):
        raise InvalidRequest(f"{hub_id!r} is not a hub dataset id: expected org/name", param="hub_id",
                             code="invalid_hub_id")
    if not SPLIT.match(split or ""):
        raise InvalidRequest(f"{split!r} is not a split name (letters, digits, '_', '-', '.'), e.g. train",
                             param="split", code="invalid_split")
    if revision and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", revision):
        raise InvalidRequest(f"{revision!r} is not a revision (a branch, tag or commit)", param="revision",
                             code="invalid_revision")
    source = {"op": HUB_OPERATION, "hub_id": hub_id, "split": split, "revision": revision}
    filename = f"{hub_id.replace('/', '--')}-{split}.jsonl"
    with transaction.atomic():
        dataset = Dataset.objects.create(owner=owner, project=project_acting(owner), filename=filename, sha256="",
                                         operations=[source])
        transaction.on_commit(lambda: tasks.dataset_validate.delay(dataset.id))
    return dataset


def hub_source(dataset: Dataset) -> dict | None:
    """Where a dataset made from the hub comes from (``hub_id``, ``split``, ``revision``); None for others."""
    first = (dataset.operations or [{}])[0]
    return first if first.get("op") == HUB_OPERATION else None


def hub_source_fetch(*, dataset: Dataset, work_dir: Path) -> Path:
    """Fetch the hub rows of ``dataset`` into storage as its file (JSONL) and return a local copy.
    Raises ``workers.hub.HubError`` when the hub cannot be reached or has no such split."""
    source = hub_source(dataset)
    local = work_dir / "hub.jsonl"
    hub_dataset_fetch(source["hub_id"], split=source["split"], revision=source["revision"], target=local)
    digest = hashlib.sha256()
    with open(local, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
        handle.seek(0)
        dataset.file.save(dataset.filename, File(handle, name=dataset.filename),
                          save=False)
    Dataset.objects.filter(pk=dataset.pk).update(file=dataset.file.name, byte_size=local.stat().st_size,
                                                 sha256=digest.hexdigest())
    return local
