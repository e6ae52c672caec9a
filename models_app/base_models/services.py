"""Writes for base models, and where the engine finds one on disk.

A user registers a base model from a directory on the workers' shared storage, a hub id or an
uploaded archive (``base_model_register``); a worker then fetches its files and reads its config and
tokenizer (``base_model_describe``), and ``base_model_transition``, the one writer of its status,
makes it ready or failed.
"""

import fcntl
import re
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from finetune_site.ids import new_id
from finetune_site.status import status_transition
from models_app.base_models.models import (
    ARCHIVE_PREFIX,
    BASE_MODEL_TRANSITIONS,
    BUILTIN_PREFIX,
    USAGE_SAMPLES_KEPT,
    BaseModel,
    BaseModelUsage,
    BaseModelUsageSample,
    UsageSampleFields,
    UsageTotals,
)
from models_app.base_models.selectors import base_model_remote_problem

TINY_LLAMA = "tiny-llama"
CNN = "cnn"  # vision: a network trained from scratch (strategies native and llm_designed); it has no files
VISION_FAMILIES = ("vision_cnn", "vision_backbone")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def base_model_builtin_ensure() -> BaseModel:
    """Make sure the built-ins are registered: ``tiny-llama`` (its files are built on first use), and
    ``cnn``, what vision jobs that train from scratch name. Returns tiny-llama."""
    from workers.tiny_model import CHAT_TEMPLATE, CONFIG, PARAMETERS

    BaseModel.objects.get_or_create(name=CNN, defaults={
        "source": BUILTIN_PREFIX + CNN, "family": "vision_cnn", "architecture": "ImageClassifier",
        "dtype": "float32", "context_length": 0})
    model, _ = BaseModel.objects.get_or_create(
        name=TINY_LLAMA,
        defaults={
            "source": BUILTIN_PREFIX + TINY_LLAMA,
            "family": "llama",
            "architecture": "LlamaForCausalLM",
            "dtype": "float32",
            "chat_template": CHAT_TEMPLATE,
            "context_length": CONFIG["max_position_embeddings"],
            "parameters": PARAMETERS,
            "shape": {"hidden_size": CONFIG["hidden_size"], "layers": CONFIG["num_hidden_layers"],
                      "intermediate_size": CONFIG["intermediate_size"], "vocab_size": CONFIG["vocab_size"]},
        },
    )
    return model


def base_model_register(*, owner, name: str, source: str = "", revision: str = "",
                        archive: UploadedFile | None = None, shared: bool = False) -> BaseModel:
    """Register ``name`` from ``source`` (an absolute directory under ``BASE_MODEL_DIRS``, or a hub id
    ``org/name`` at ``revision``) or from ``archive`` (a .tar.gz/.zip of a model directory); queue its
    description on a worker. ``shared`` (staff only) makes it every user's; otherwise it is ``owner``'s.

    Nothing is stored when the request is refused: a bad name or source is a 400 naming ``param``,
    a name in use a 409.
    """
    from workers.model_files import ARCHIVE_SUFFIXES

    name, source, revision = (name or "").strip(), (source or "").strip(), (revision or "").strip()
    if not NAME.match(name):
        raise InvalidRequest("name must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit",
                             param="name")
    if shared and not getattr(owner, "is_staff", False):
        raise InvalidRequest("only an operator can share a base model with every user", param="shared")
    if bool(source) == bool(archive):
        raise InvalidRequest("give either source (a directory on the workers' storage or a hub id org/name) or an "
                             "archive file, not both or neither", param="source")
    if revision and (archive or not HUB_ID.match(source)):
        raise InvalidRequest("revision applies to a hub id only", param="revision")
    if revision and not REVISION.match(revision):
        raise InvalidRequest("revision must be a branch, tag or commit", param="revision")
    if archive is not None and not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise InvalidRequest("the archive must be a .tar.gz, .tgz or .zip of a model directory", param="file")
    if source:
        _source_check(source)
    with transaction.atomic():
        if BaseModel.objects.select_for_update().filter(name__iexact=name).exists():
            raise Conflict(f"a base model named {name!r} already exists; choose another name", param="name",
                           code="name_taken")
        if archive is not None:
            source = ARCHIVE_PREFIX + default_storage.save(f"base_models/{new_id('bma', 12)}/{archive.name}", archive)
        base = BaseModel.objects.create(name=name, owner=None if shared else owner, source=source, revision=revision,
                                        status=BaseModel.Status.PENDING, family="", context_length=0)
        transaction.on_commit(lambda: _describe_queue(base.pk))
    return base


def _describe_queue(pk: int) -> None:
    from models_app.base_models.tasks import base_model_describe as base_model_describe_task

    base_model_describe_task.delay(pk)


def _source_check(source: str) -> None:
    if HUB_ID.match(source):
        return
    path = Path(source)
    if not path.is_absolute():
        raise InvalidRequest(f"{source!r} is neither an absolute directory on the workers' storage nor a hub id "
                             "like org/name", param="source")
    resolved = path.resolve()
    roots = [Path(root).resolve() for root in settings.BASE_MODEL_DIRS]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InvalidRequest(f"{source} is outside the folders base models may be registered from "
                             f"({', '.join(map(str, roots))}; BASE_MODEL_DIRS)", param="source")
    if not resolved.is_dir():
        raise InvalidRequest(f"{source} is not a directory", param="source", code="not_a_model")
    if not (resolved / "config.json").is_file():
        raise InvalidRequest(f"{source} is not a model directory: it has no config.json", param="source",
                             code="not_a_model")


def base_model_transition(*, base_model: BaseModel, to: str, **fields) -> BaseModel:
    """The one writer of ``BaseModel.status`` (rules: ``BASE_MODEL_TRANSITIONS``)."""
    return status_transition(BaseModel, base_model.pk, to, rules=BASE_MODEL_TRANSITIONS, **fields)


def base_model_describe(*, base_model_id: int) -> BaseModel | None:
    """On a worker: fetch a pending base model's files and record what they say; ready, or failed with
    the reason (a hub id with no network, a directory that is not a model, ...). One no longer pending
    (deleted, or described by an earlier delivery) is left alone; an unexpected error fails it, then
    propagates for the worker's log."""
    from workers.loading import ModelLoadError
    from workers.model_files import model_describe

    base = BaseModel.objects.filter(pk=base_model_id).first()
    if base is None or base.status != BaseModel.Status.PENDING:
        return None
    try:
        path = base_model_local_path(base, fetch=True)
        info = model_describe(path)
    except ModelLoadError as exc:
        return base_model_fail(base_model=base, message=str(exc))
    except Exception as exc:
        base_model_fail(base_model=base, message=f"{type(exc).__name__}: {exc}")
        raise
    local = path if path != base.source else ""
    return base_model_transition(
        base_model=base, to=BaseModel.Status.READY, local_path=local, architecture=info.architecture,
        family=info.family, parameters=info.parameters, context_length=info.context_length,
        chat_template=info.chat_template, dtype=info.dtype, size_bytes=info.size_bytes, license=info.license,
        shape=info.shape, error="", checked_at=timezone.now())


def base_model_fail(*, base_model: BaseModel, message: str) -> BaseModel:
    return base_model_transition(base_model=base_model, to=BaseModel.Status.FAILED, error=message[:4000],
                                 checked_at=timezone.now())


def base_model_remote_register(base: BaseModel) -> BaseModel:
    """Store a remote provider's model a job names (``base_model_for_provider``), once: shared, as the
    provider's model names are."""
    if base.pk is not None:
        return base
    stored, _ = BaseModel.objects.get_or_create(name=base.name, defaults={
        "source": base.source, "family": base.family, "status": BaseModel.Status.READY,
        "checked_at": timezone.now()})
    return stored


def base_model_local_path(base_model: BaseModel, *, fetch: bool = False) -> str:
    """Where the engine loads the model (and its tokenizer) from: built-ins are built on first use; a
    hub id or archive where a worker put it (``fetch``: put it there now); a directory as given. A
    remote provider's model has none (ValueError)."""
    if base_model.is_remote:
        raise ValueError(base_model_remote_problem(base_model))
    if base_model.is_builtin:
        from workers.tiny_model import tiny_model_build

        name = base_model.source.removeprefix(BUILTIN_PREFIX)
        if name == CNN:
            return ""  # trained from scratch: nothing to load
        if name != TINY_LLAMA:
            raise ValueError(f"unknown built-in model {name!r}")
        return str(tiny_model_build(Path(settings.BASE_MODELS_DIR) / name))
    if base_model.local_path and not fetch and Path(base_model.local_path).exists():
        return base_model.local_path
    if base_model.is_archive:
        return _archive_unpack(base_model)
    if HUB_ID.match(base_model.source) and fetch:
        from workers.model_files import hub_fetch

        return hub_fetch(base_model.source, revision=base_model.revision)
    return base_model.source


def _archive_unpack(base_model: BaseModel) -> str:
    from workers.model_files import archive_unpack

    stored = base_model.source.removeprefix(ARCHIVE_PREFIX)
    target = Path(settings.BASE_MODEL_UPLOADS_DIR) / str(base_model.pk)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{base_model.pk}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two workers unpacking the same archive take turns
        local = storage_fetch(stored, target.parent / f".{base_model.pk}-{Path(stored).name}")
        try:
            return archive_unpack(str(local), str(target / "model"))
        finally:
            local.unlink(missing_ok=True)


PRUNE_EVERY = 100  # requests between trims of a model's samples to the newest USAGE_SAMPLES_KEPT


def base_model_usage_record(*, base_model: BaseModel, prompt_tokens: int, completion_tokens: int,
                            latency_ms: float) -> None:
    """Count one chat request of a base model (``usage_count``)."""
    usage_count(totals=BaseModelUsage, samples=BaseModelUsageSample, key={"base_model": base_model},
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=latency_ms)


def usage_count(*, totals: type[UsageTotals], samples: type[UsageSampleFields], key: dict, prompt_tokens: int,
                completion_tokens: int, latency_ms: float) -> None:
    """Count one chat request of the model ``key`` names: its totals, and a sample (latency, tokens) for the
    percentiles; every ``PRUNE_EVERY`` requests the samples are trimmed to the newest kept."""
    with transaction.atomic():
        totals.objects.get_or_create(**key)
        counted = totals.objects.filter(**key)
        counted.update(requests=F("requests") + 1, prompt_tokens=F("prompt_tokens") + prompt_tokens,
                       completion_tokens=F("completion_tokens") + completion_tokens, last_request_at=timezone.now())
        samples.objects.create(**key, latency_ms=latency_ms, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens)
        requests = counted.values_list("requests", flat=True).get()
    if requests % PRUNE_EVERY == 0:
        kept = list(samples.objects.filter(**key).order_by("-id")
                    .values_list("id", flat=True)[USAGE_SAMPLES_KEPT - 1:USAGE_SAMPLES_KEPT])
        if kept:
            samples.objects.filter(**key, id__lt=kept[0]).delete()
