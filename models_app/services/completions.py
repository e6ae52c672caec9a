"""The data loop: chat completions kept with ``store: true`` (or imported from an OpenAI-format export),
rated and corrected by their owner, and made into datasets whose lineage names the conversations.

An owner is the project here: each has one retention setting (``CompletionSettings``), defaulting to
``STORED_COMPLETIONS_RETENTION_DAYS``; a completion past it is no longer listed and the hourly
``stored_completions_purge`` task deletes it.
"""

import json
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from datasets_app.models import Dataset
from datasets_app.services import dataset_rows_create
from finetune_site.errors import InvalidRequest, NotFound
from finetune_site.ids import new_id
from finetune_site.nul_guard import nul_replaced
from finetune_site.parsers import json_problem
from jobs_app.models import Checkpoint
from models_app.base_models.models import BaseModel
from models_app.models import CompletionSettings, FineTunedModel, StoredCompletion
from models_app.selectors import model_public_id, stored_completions_visible_to

# OpenAI's limits on ``metadata``
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
RATINGS = {"up": StoredCompletion.Rating.UP, "down": StoredCompletion.Rating.DOWN, None: None}
ROLES = ("system", "developer", "user", "assistant")
MAX_IMPORT_ROWS = 10_000
MAX_DATASET_COMPLETIONS = 10_000
FROM_COMPLETIONS_VERSION = 1  # bump when the rows made from the same completions change
UNSET = object()


def metadata_check(metadata, *, param: str = "metadata") -> dict:
    """``metadata`` as OpenAI takes it: up to 16 string keys (64 characters) with string values (512)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > METADATA_KEYS:
        raise InvalidRequest(f"{param} must be an object of at most {METADATA_KEYS} keys", param=param)
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > METADATA_KEY_CHARS:
            raise InvalidRequest(f"{param} keys must be strings of 1 to {METADATA_KEY_CHARS} characters", param=param)
        if not isinstance(value, str) or len(value) > METADATA_VALUE_CHARS:
            raise InvalidRequest(f"{param}.{key} must be a string of at most {METADATA_VALUE_CHARS} characters",
                                 param=param)
    return dict(metadata)


def completion_retention_days(owner) -> int:
    """How many days ``owner``'s stored completions are kept (0: for ever)."""
    found = CompletionSettings.objects.filter(owner=owner).first()
    return found.retention_days if found else settings.STORED_COMPLETIONS_RETENTION_DAYS


def completion_settings_update(*, owner, retention_days) -> CompletionSettings:
    """Set ``owner``'s retention; completions already stored get the new expiry too (counted from their
    creation, an imported one's as exported), so shortening it removes the old ones at the next purge."""
    if isinstance(retention_days, bool) or not isinstance(retention_days, int) or not 0 <= retention_days <= 36500:
        raise InvalidRequest("retention_days must be a whole number of days from 0 (keep for ever) to 36500",
                             param="retention_days")
    with transaction.atomic():
        found, _ = CompletionSettings.objects.update_or_create(owner=owner, defaults={"retention_days": retention_days})
        stored = StoredCompletion.objects.filter(owner=owner)
        if retention_days == 0:
            stored.update(expires_at=None)
        else:
            stored.update(expires_at=F("created_at") + timedelta(days=retention_days))
    return found


def _expiry(owner, created: datetime) -> datetime | None:
    days = completion_retention_days(owner)
    return created + timedelta(days=days) if days else None


def model_version_of(model: BaseModel | FineTunedModel | Checkpoint) -> str:
    """Which weights answered: ``name@vN`` for a fine-tuned model, the checkpoint's id, or the base model's
    name (with its revision when it has one)."""
    if isinstance(model, FineTunedModel):
        return f"{model.reference} ({model.id})"
    if isinstance(model, Checkpoint):
        return model.id
    revision = getattr(model, "revision", "") or ""
    return f"{model.name}@{revision}" if revision else model.name


def completion_store(*, owner, model: BaseModel | FineTunedModel | Checkpoint, response: dict, messages: list[dict],
                     request: dict, metadata: dict) -> StoredCompletion:
    """Keep a served completion (``store: true``): the request's messages, the answer ``response`` (OpenAI's
    chat.completion object) and the model version that gave it."""
    created = datetime.fromtimestamp(response["created"], tz=UTC)
    choices = nul_replaced([{"index": c["index"], "message": c["message"], "finish_reason": c["finish_reason"]}
                            for c in response["choices"]])
    return StoredCompletion.objects.create(
        id=response["id"], owner=owner, model=model_public_id(model), model_version=model_version_of(model),
        messages=messages, choices=choices, usage=response.get("usage") or {}, request=request,
        metadata=metadata, created_at=created, expires_at=_expiry(owner, created))


def stored_completion_feedback(*, completion: StoredCompletion, rating=UNSET, correction=UNSET) -> StoredCompletion:
    """Rate an answer (``"up"``, ``"down"``, or None to clear) and/or correct it (text; empty clears).
    A correction is what a dataset made from this completion learns."""
    if rating is UNSET and correction is UNSET:
        raise InvalidRequest("give a rating (up, down or null) or a correction", param="rating")
    if rating is not UNSET:
        if rating not in RATINGS:
            raise InvalidRequest("rating must be up, down or null", param="rating")
        completion.rating = RATINGS[rating]
    if correction is not UNSET:
        if correction is not None and not isinstance(correction, str):
            raise InvalidRequest("correction must be a string (empty or null clears it)", param="correction")
        completion.correction = (correction or "").strip()
    completion.save(update_fields=["rating", "correction"])
    return completion


def stored_completion_metadata_update(*, completion: StoredCompletion, metadata) -> StoredCompletion:
    """Replace a stored completion's metadata (OpenAI's ``POST /v1/chat/completions/{id}``)."""
    completion.metadata = metadata_check(metadata)
    completion.save(update_fields=["metadata"])
    return completion


def stored_completion_delete(*, completion: StoredCompletion) -> None:
    completion.delete()


def stored_completions_purge() -> int:
    """Delete every stored completion past its owner's retention; how many."""
    deleted, _ = StoredCompletion.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


def completion_row(completion: StoredCompletion) -> dict:
    """The chat row a completion teaches: its messages, then the answer (the correction when there is one)."""
    return {"messages": [*completion.messages, {"role": "assistant", "content": completion.final_answer}]}


def completions_dataset_create(*, owner, completion_ids: list[str], filename: str = "") -> Dataset:
    """A new dataset of chat rows from ``owner``'s stored completions (in the order given; corrected
    answers win), ready for a job or a preparation. Its ``operations`` name the completions it came from,
    and each completion lists the dataset: lineage both ways."""
    if not isinstance(completion_ids, list) or not completion_ids \
            or not all(isinstance(i, str) for i in completion_ids):
        raise InvalidRequest("completion_ids must list the stored completions to use", param="completion_ids")
    if len(completion_ids) > MAX_DATASET_COMPLETIONS:
        raise InvalidRequest(f"at most {MAX_DATASET_COMPLETIONS} completions in one dataset", param="completion_ids")
    ids = list(dict.fromkeys(completion_ids))
    found = stored_completions_visible_to(owner).in_bulk(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no stored completion {missing[0]!r} (it does not exist, expired or is not yours)",
                       param="completion_ids", code="completion_not_found")
    completions = [found[i] for i in ids]
    unanswered = next((c for c in completions if not c.final_answer.strip()), None)
    if unanswered is not None:
        raise InvalidRequest(f"{unanswered.id} has an empty answer; correct it or leave it out",
                             param="completion_ids", code="empty_answer")
    filename = (filename or "").strip() or f"completions-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
    if not filename.endswith(".jsonl"):
        filename += ".jsonl"
    operations = [{"op": "from_completions", "version": FROM_COMPLETIONS_VERSION, "completions": ids,
                   "corrected": sum(bool(c.correction) for c in completions),
                   "models": sorted({c.model_version or c.model for c in completions})}]
    with transaction.atomic():
        dataset = dataset_rows_create(owner=owner, rows=[completion_row(c) for c in completions], filename=filename,
                                      operations=operations)
        for completion in completions:
            completion.datasets.add(dataset)
    return dataset


def completions_import(*, owner, lines) -> list[StoredCompletion]:
    """Stored completions from an OpenAI-format export: JSONL whose rows are chat.completion objects with
    their request's messages (``messages``, ``input_messages`` or ``request.messages``), or chat rows
    ``{"messages": [..., {"role": "assistant", ...}]}`` (the last assistant turn is the answer). ``model``,
    ``metadata`` and ``created`` are kept when present. All rows or none: a bad one is a 400 naming its line.
    A row whose id ``owner`` already stored is skipped, so importing a file twice adds nothing."""
    parsed = []
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"line {number}: not UTF-8", param="file", code="invalid_file") from None
        if not raw.strip():
            continue
        if len(parsed) >= MAX_IMPORT_ROWS:
            raise InvalidRequest(f"at most {MAX_IMPORT_ROWS} conversations in one import", param="file",
                                 code="invalid_file")
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidRequest(f"line {number}: not JSON", param="file", code="invalid_file") from None
        problem = json_problem(row)  # PostgreSQL refuses a NUL in jsonb: a 400 here, not a 500 at the save
        if problem:
            raise InvalidRequest(f"line {number}: {problem}", param="file", code="invalid_file")
        parsed.append(_import_row(row, number))
    if not parsed:
        raise InvalidRequest("the file has no conversations", param="file", code="empty_file")
    made = []
    with transaction.atomic():
        for fields in parsed:
            if fields["id"] and StoredCompletion.objects.filter(owner=owner, pk=fields["id"]).exists():
                continue
            created = fields.pop("created") or timezone.now()
            wanted = fields.pop("id")
            # kept for the retention from the import on: an export is often older than the retention
            completion = StoredCompletion(owner=owner, source=StoredCompletion.Source.IMPORTED, created_at=created,
                                          expires_at=_expiry(owner, timezone.now()), **fields)
            completion.id = wanted if wanted and not StoredCompletion.objects.filter(pk=wanted).exists() \
                else new_id("chatcmpl", 24)
            try:
                with transaction.atomic():
                    completion.save(force_insert=True)
            except IntegrityError:  # another user's import took the id meanwhile
                completion.id = new_id("chatcmpl", 24)
                completion.save(force_insert=True)
            made.append(completion)
    return made


def _import_row(row, number: int) -> dict:
    where = f"line {number}"
    if not isinstance(row, dict):
        raise InvalidRequest(f"{where}: a row must be a JSON object", param="file", code="invalid_file")
    request = row.get("request") if isinstance(row.get("request"), dict) else {}
    messages = row.get("messages") or row.get("input_messages") or request.get("messages")
    if isinstance(messages, dict) and isinstance(messages.get("data"), list):  # GET …/messages' list shape
        messages = messages["data"]
    messages = _messages_check(messages, where)
    if isinstance(row.get("choices"), list) and row["choices"]:
        choice = row["choices"][0]
        answer = (choice.get("message") or {}).get("content") if isinstance(choice, dict) else None
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    elif messages and messages[-1]["role"] == "assistant":
        answer, finish, messages = messages[-1]["content"], "stop", messages[:-1]
    else:
        raise InvalidRequest(f"{where}: no answer: give choices (a chat.completion) or end messages with the "
                             "assistant's turn", param="file", code="invalid_file")
    if not isinstance(answer, str) or not answer.strip():
        raise InvalidRequest(f"{where}: the answer is empty", param="file", code="invalid_file")
    if not messages:
        raise InvalidRequest(f"{where}: no messages before the answer", param="file", code="invalid_file")
    created = row.get("created")
    model = row.get("model") or request.get("model") or "imported"
    completion_id = row.get("id") if isinstance(row.get("id"), str) and row["id"].startswith("chatcmpl") else ""
    return {"id": completion_id[:64], "messages": messages, "model": str(model)[:255],
            "model_version": str(model)[:255],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": finish or "stop"}],
            "usage": row.get("usage") if isinstance(row.get("usage"), dict) else {},
            "metadata": metadata_check(row.get("metadata"), param=f"file ({where}) metadata"),
            "created": datetime.fromtimestamp(created, tz=UTC) if isinstance(created, int) and created > 0 else None}


def _messages_check(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(f"{where}: messages must be a list of {{role, content}} turns", param="file",
                             code="invalid_file")
    checked = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # OpenAI's text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(content, str):
            raise InvalidRequest(f"{where}: messages[{index}] must be {{role: {'|'.join(ROLES)}, content: text}}",
                                 param="file", code="invalid_file")
        checked.append({"role": "system" if message["role"] == "developer" else message["role"], "content": content})
    return checked
