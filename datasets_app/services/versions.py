"""New versions of a ready dataset (clean, chunk, language, quality, dedup, mask, filter, convert, map,
split): the parent is only read; each version records its parent and the operations that made it."""

import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from datasets_app import tasks
from datasets_app.models import Dataset
from datasets_app.services.files import files_delete, sha256_of, tmp_dir
from datasets_app.services.images import dataset_images_split
from datasets_app.services.options import validate_config
from datasets_app.services.uploads import dataset_store
from datasets_app.services.validation import dataset_transition, dataset_verdict_after
from finetune_site.errors import Conflict, InvalidRequest
from finetune_site.files import storage_fetch
from models_app.base_models.selectors import base_model_named
from models_app.base_models.services import base_model_local_path
from workers.prepare import TOKEN_COUNTING, PrepareConfig, PrepareError, operations_check, run_prepare
from workers.report import Issue, Report
from workers.validate import run_validation

Status = Dataset.Status
NAME_BYTES = 255  # the filename column, and a file name on most file systems


def dataset_prepare(*, dataset: Dataset, operations: list) -> list[Dataset]:
    """Make new versions of a ready dataset (the original is only read): one, or train + validation
    for a split. Each records its parent and the operations applied, with what they did."""
    if dataset.is_vision:
        return dataset_images_split(dataset=dataset, operations=operations)
    if dataset.status != Status.READY:
        raise Conflict(f"{dataset.id} is {dataset.status}; only a ready dataset can be prepared", param="file_id",
                       code="dataset_not_ready")
    operations = dataset_operations_check(operations=operations, fmt=dataset.format, owner=dataset.owner)
    if dataset.byte_size > settings.DATASET_INLINE_BYTES:
        return _prepare_queue(dataset, operations)
    fmt = dataset.training_format or dataset.format
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as work:
        work_dir = Path(work)
        local = storage_fetch(dataset.training_file_name, work_dir / "parent.jsonl")
        try:
            result = run_prepare(PrepareConfig(path=str(local), format=fmt, output_dir=str(work_dir / "out"),
                                               operations=tuple(operations),
                                               tokenizers=_tokenizer_paths(operations, dataset.owner)))
        except PrepareError as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        versions: list[Dataset] = []
        try:
            _versions_store(dataset, result, work_dir, versions)
        except BaseException:
            for version in versions:  # all versions or none
                files_delete(version)
            raise
    return versions


def dataset_operations_check(*, operations, fmt: str, owner) -> list[dict]:
    """The prepare operations, checked for a dataset of format ``fmt`` and normalised; an unknown operation,
    a bad option or a base model ``owner`` cannot use is a 400 naming it (``operations[1].model``)."""
    try:
        operations = operations_check(operations, fmt)
    except PrepareError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from exc
    _counting_models(operations, owner)  # an unknown model is a 400 before anything is queued
    return operations


def _counting_models(operations: list[dict], owner) -> dict:
    """The base models that count tokens (``filter_length``, ``chunk``), by name; one ``owner`` cannot use is a
    400."""
    models = {}
    for index, op in enumerate(operations):
        name = op.get("model") if op["op"] in TOKEN_COUNTING else None
        if name and name not in models:
            models[name] = base_model_named(name, user=owner, param=f"operations[{index}].model")
    return models


def _tokenizer_paths(operations: list[dict], owner) -> tuple:
    """(model name, local path) of each model that counts tokens, for ``PrepareConfig.tokenizers``."""
    return tuple((name, base_model_local_path(base)) for name, base in _counting_models(operations, owner).items())


def _version_filename(dataset: Dataset, part: str, number: int | None = None) -> str:
    """``<stem>.v<number>.jsonl`` (``.validation.jsonl`` for a split's validation part), the stem cut to
    fit NAME_BYTES: a name stored before uploads were limited to MAX_NAME can be longer."""
    stem = Path(dataset.filename).stem.split(".")[0]
    number = number or dataset.versions.count() + 2  # the parent is version 1; a split's parts share a number
    suffix = f".v{number}" + (".validation.jsonl" if part == "validation" else ".jsonl")
    return stem.encode()[: NAME_BYTES - len(suffix)].decode("utf-8", "ignore") + suffix


def _part_marker(part: str, parts: int) -> list[dict]:
    return [{"op": "part", "part": part}] if parts > 1 else []


def _prepare_queue(dataset: Dataset, operations: list[dict]) -> list[Dataset]:
    """A large parent is prepared by the ``dataset_prepare`` task: the versions exist at once, ``uploaded``."""
    parts = ["train", "validation"] if operations and operations[-1]["op"] == "split" else ["train"]
    number = dataset.versions.count() + 2
    with transaction.atomic():
        versions = [Dataset.objects.create(
            owner=dataset.owner, project_id=dataset.project_id, filename=_version_filename(dataset, part, number),
            purpose=dataset.purpose,
            parent=dataset, operations=[*operations, *_part_marker(part, len(parts))], sha256="", byte_size=0,
        ) for part in parts]
        ids = [v.id for v in versions]
        transaction.on_commit(lambda: tasks.dataset_prepare.delay(dataset.id, ids, operations))
    return versions


def dataset_prepare_run(*, parent_id: str, version_ids: list[str], operations: list[dict]) -> None:
    """Fill versions made by ``_prepare_queue`` (the ``dataset_prepare`` task): ``uploaded → validating →
    ready | invalid``, each with its file and report. The parent is only read."""
    parent = Dataset.objects.filter(pk=parent_id).first()
    versions = list(Dataset.objects.filter(pk__in=version_ids, status__in=[Status.UPLOADED, Status.VALIDATING]))
    versions.sort(key=lambda v: version_ids.index(v.id))
    if parent is None or len(versions) != len(version_ids):
        return  # deleted meanwhile, or already done by an earlier delivery
    for version in versions:
        dataset_transition(dataset_id=version.id, to=Status.VALIDATING, progress=0.0)
    parts = ["train", "validation"][: len(versions)]
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as work:
        work_dir = Path(work)
        local = storage_fetch(parent.training_file_name, work_dir / "parent.jsonl")
        try:
            result = run_prepare(PrepareConfig(path=str(local), format=parent.training_format or parent.format,
                                               output_dir=str(work_dir / "out"), operations=tuple(operations),
                                               tokenizers=_tokenizer_paths(operations, parent.owner)))
        except (PrepareError, InvalidRequest) as exc:  # InvalidRequest: the model was removed meanwhile
            for version in versions:
                _version_invalid(version, str(exc))
            return
        for part, version in zip(parts, versions, strict=True):
            if not result.rows.get(part):
                _version_invalid(version, f"the operations leave no {part} rows")
                continue
            path = Path(result.files[part])
            part_dir = work_dir / part
            part_dir.mkdir()
            checked = run_validation(validate_config(path, version.filename, {}, part_dir))
            with open(path, "rb") as handle:
                name = default_storage.save(f"datasets/{version.id}/{version.filename}",
                                            File(handle, name=version.filename))
            with transaction.atomic():
                done = dataset_transition(
                    dataset_id=version.id, to=Status.READY if checked.ok else Status.INVALID, file=name,
                    sha256=sha256_of(path), byte_size=path.stat().st_size, format=checked.format,
                    container=checked.container, row_count=checked.rows, validation_report=checked.report,
                    progress=1.0, validated_at=timezone.now(),
                    operations=[*result.applied, *_part_marker(part, len(parts))])
                dataset_verdict_after(done)


def dataset_version_add(*, parent: Dataset, local: Path, operations: list[dict]) -> Dataset:
    """A version of ``parent`` made elsewhere (an RLAIF job's preference pairs, sampled from its prompts
    and ranked by its judge): the file at ``local`` checked and stored, ``operations`` saying what made it."""
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as work:
        return _version_store(parent, local, filename=_version_filename(parent, "train"), operations=operations,
                              work_dir=Path(work), param="file")


def dataset_rows_create(*, owner, rows: list[dict], filename: str, operations: list[dict],
                        purpose: str = "fine-tune") -> Dataset:
    """A new dataset (version 1 of its own line) from ``rows`` made elsewhere (stored chat completions),
    ``operations`` saying where they came from: its lineage, as a prepared version's operations are."""
    if not rows:
        raise InvalidRequest("no rows to make a dataset of", param="completion_ids", code="invalid_result")
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as work:
        work_dir = Path(work)
        local = work_dir / "rows.jsonl"
        with open(local, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        checked = run_validation(validate_config(local, filename, {}, work_dir))
        if not checked.ok:
            raise InvalidRequest(f"the rows of {filename} are not usable: {checked.summary}", param="completion_ids",
                                 code="invalid_result")
        return dataset_store(owner=owner, local=local, filename=filename, purpose=purpose, sha256=sha256_of(local),
                             size=local.stat().st_size, options={}, result=checked, work_dir=work_dir,
                             operations=operations)


def _version_store(parent: Dataset, path: Path, *, filename: str, operations: list[dict], work_dir: Path,
                   param: str) -> Dataset:
    checked = run_validation(validate_config(path, filename, {}, work_dir))
    if not checked.ok:
        raise InvalidRequest(f"the rows of {filename} are not usable: {checked.summary}", param=param,
                             code="invalid_result")
    return dataset_store(owner=parent.owner, local=path, filename=filename, purpose=parent.purpose,
                         sha256=sha256_of(path), size=path.stat().st_size, options={}, result=checked,
                         work_dir=work_dir, parent=parent, operations=operations)


def _version_invalid(version: Dataset, message: str) -> None:
    report = Report(version.filename)
    report.add(Issue("prepare_failed", message, "change the operations and prepare again"))
    with transaction.atomic():
        failed = dataset_transition(dataset_id=version.id, to=Status.INVALID, validation_report=report.as_dict(),
                                    progress=1.0, validated_at=timezone.now())
        dataset_verdict_after(failed)


def _versions_store(dataset: Dataset, result, work_dir: Path, versions: list) -> None:
    number = dataset.versions.count() + 2  # the parent is version 1; a split's two parts share a number
    with transaction.atomic():
        for part, path in result.files.items():
            if not result.rows.get(part):
                raise InvalidRequest(f"the operations leave no {part} rows", param="operations",
                                     code="invalid_result")
            part_dir = work_dir / part
            part_dir.mkdir()
            versions.append(_version_store(
                dataset, Path(path), filename=_version_filename(dataset, part, number), work_dir=part_dir,
                operations=[*result.applied, *_part_marker(part, len(result.files))], param="operations"))
