"""The Hugging Face hub: whether the workers can reach it, and datasets fetched from it as JSONL.

Base models (``workers.model_files.hub_fetch``) and datasets (``hub_dataset_fetch``) ask
``hub_offline`` first, so with no network both fail at once with a clear message instead of
waiting on the hub client's retries and timeouts.
"""

import json
import os
import re
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # train, validation, test, train_sft, ...
REACH_SECONDS = 3.0  # the longest the check waits for the hub's address and a connection
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


class HubError(Exception):
    """The hub cannot be reached, or what was asked of it is not there."""


def hub_offline(endpoint: str | None = None) -> str:
    """Why the hub cannot be reached from here ("" when it can): ``HF_HUB_OFFLINE`` (or
    ``HF_DATASETS_OFFLINE``) set, or no connection to ``endpoint`` (default ``HF_ENDPOINT`` or
    huggingface.co) within ``REACH_SECONDS``. The name lookup runs in a thread, as it has no
    timeout of its own."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").lower() in _OFFLINE_VALUES:
            return f"the workers have no network ({name} is set)"
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    failure: list[str] = ["no answer"]

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=REACH_SECONDS).close()
            failure[0] = ""
        except OSError as exc:
            failure[0] = str(exc) or type(exc).__name__

    check = threading.Thread(target=connect, daemon=True)
    check.start()
    check.join(REACH_SECONDS)
    if failure[0]:
        return f"the workers cannot reach {address[0]} ({failure[0]})"
    return ""


def hub_dataset_fetch(hub_id: str, *, split: str, revision: str = "", target: Path) -> int:
    """Write split ``split`` of hub dataset ``hub_id`` (at ``revision``, default its main branch) to
    ``target`` as JSONL, one row a line, streamed (the rows are never all in memory); return the rows.
    Raises ``HubError`` with no network, or when the dataset or split is not there."""
    why = hub_offline()
    if why:
        raise HubError(f"cannot fetch the hub dataset {hub_id!r}: {why}; download it where there is a network "
                       "and upload the file instead")
    try:
        return rows_write(_rows(hub_id, split, revision), target)
    except HubError:
        raise
    except Exception as exc:  # the hub client's, datasets' and OSError for one failed download
        at = f" at {revision}" if revision else ""
        raise HubError(f"could not fetch split {split!r} of the hub dataset {hub_id!r}{at}: "
                       f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from exc


def _rows(hub_id: str, split: str, revision: str) -> Iterable[dict]:
    from datasets import load_dataset

    return load_dataset(hub_id, split=split, revision=revision or None, streaming=True)


def rows_write(rows: Iterable[dict], target: Path) -> int:
    """Write ``rows`` to ``target`` as JSONL; return how many."""
    count = 0
    with open(target, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            count += 1
    return count
