"""What callers may say about how a file is read (container, format, column map), and the
limits every read of an upload respects."""

import json
import re
from dataclasses import replace
from pathlib import Path

from django.conf import settings

from datasets_app.models import VISION_PURPOSE
from finetune_site.errors import InvalidRequest
from workers.containers import CONTAINERS, GZIP, MANY_FILES_SUFFIXES, TXT, Limits, container_from_name
from workers.formats import FORMATS, TEXT
from workers.report import Issue, Report
from workers.validate import ValidateConfig, ValidationResult

PURPOSES = {"fine-tune", VISION_PURPOSE}
MAX_NAME = 200  # bytes of a file name: room for a version's suffix (".v12.validation.jsonl") in 255
SUPPORTED = ".jsonl, .json, .csv, .tsv, .parquet, .txt, or a .zip/.gz holding one of them"


def dataset_options_clean(*, container: str | None = None, format: str | None = None,
                          column_map=None) -> dict:
    """Check the reading options a caller gave; return only those set."""
    options: dict = {}
    if container:
        if container not in CONTAINERS:
            raise InvalidRequest(f"container must be one of {', '.join(CONTAINERS)}", param="container")
        options["container"] = container
    if format:
        if format not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
        options["format"] = format
    mapping = column_map_parse(column_map)
    if mapping:
        options["column_map"] = mapping
    return options


def column_map_parse(raw) -> dict[str, str]:
    """A column mapping from a dict, a JSON object, or text like ``question→prompt, answer:completion``."""
    if raw in (None, "", {}):
        return {}
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise InvalidRequest(f"column_map is not valid JSON ({exc})", param="column_map") from exc
        else:
            raw = {}
            for pair in filter(None, (p.strip() for p in re.split(r"[,\n]", text))):
                parts = re.split(r"\s*(?:→|->|=>|:|=)\s*", pair, maxsplit=1)
                if len(parts) != 2:
                    raise InvalidRequest(f"column_map: {pair!r} is not source→target", param="column_map")
                raw[parts[0]] = parts[1]
    if not isinstance(raw, dict) or not 0 < len(raw) <= 100 or not all(
            _column_ok(k) and _column_ok(v) for k, v in raw.items()):
        raise InvalidRequest('column_map must map column names to field names, e.g. {"question": "prompt"}',
                             param="column_map")
    return {k.strip(): v.strip() for k, v in raw.items()}


def _column_ok(name) -> bool:
    return isinstance(name, str) and bool(name.strip()) and len(name) <= MAX_NAME and name.isprintable()


def name_check(filename: str, options: dict, purpose: str = "fine-tune") -> None:
    """A name we can store and derive version names from (a file system's name holds 255 bytes: a
    name over MAX_NAME in UTF-8 is refused, counting 2 to 4 bytes for a character outside ASCII);
    a type we read, or a given container (for images: an archive)."""
    if not filename:
        raise InvalidRequest("the file has no name; name it after what it holds, e.g. train.jsonl", param="file")
    size = len(filename.encode("utf-8", "replace"))
    if size > MAX_NAME or not filename.isprintable():
        raise InvalidRequest(f"the file name {filename[:40]!r}… is {size} bytes long or holds control characters; "
                             f"rename it (at most {MAX_NAME} printable characters, fewer outside ASCII)",
                             param="file")
    if purpose == VISION_PURPOSE:
        if not filename.lower().endswith(tuple(MANY_FILES_SUFFIXES)):
            raise InvalidRequest(f"{filename}: images are uploaded as an archive; upload a .zip, .tar, .tar.gz or "
                                 ".tgz of class folders (cats/1.jpg, dogs/1.jpg) or of images with a labels.csv",
                                 param="file", code="invalid_file_format")
        return
    if not options.get("container") and not container_from_name(filename):
        if container_from_name(f"name{filename}"):  # ".jsonl": a dot file, all extension and no name
            raise InvalidRequest(f"{filename}: the name is only an extension; put a name before it, e.g. "
                                 f"train{filename}", param="file", code="invalid_file_format")
        raise InvalidRequest(f"{filename}: not a training file type we read; upload {SUPPORTED} "
                             "(or give container=...)", param="file", code="invalid_file_format")


TEXT_UNCONFIRMED = ("each line would become one document to continue pre-training on (loss on every token), "
                    "not a question with its answer")
TEXT_FIX = ('if that is what you want, say so: tick "This is pretraining text" on the upload form, or send '
            "format=text; to teach answers, upload chat, alpaca, prompt/completion or preference rows as .jsonl, "
            ".json, .csv, .tsv or .parquet (a .txt holding JSON lines: rename it .jsonl or send container=jsonl)")


def _plain_text(container: str, inner: str = "") -> bool:
    return TXT in (container, inner)


def text_intent_check(filename: str, options: dict, purpose: str = "fine-tune") -> None:
    """A file named or declared plain text (.txt, .txt.gz, container=txt) is taken as pretraining text
    only with ``format=text``: prose is never silently turned into a training set."""
    if purpose == VISION_PURPOSE:
        return
    container = options.get("container") or container_from_name(filename)
    inner = container_from_name(filename[: -len(".gz")]) if container == GZIP and filename.lower().endswith(".gz") \
        else ""
    if _plain_text(container, inner) and options.get("format") != TEXT:
        raise InvalidRequest(f"{filename} is plain text: {TEXT_UNCONFIRMED}; {TEXT_FIX}", param="format",
                             code="text_format_unconfirmed")


def text_intent_result(result: ValidationResult, filename: str, options: dict) -> ValidationResult:
    """The same rule once the content is known (a .zip holding a .txt): a result that read plain text
    without ``format=text`` becomes a refusal that says how to confirm it."""
    if not result.ok or options.get("format") == TEXT or not _plain_text(result.container, result.inner):
        return result
    report = Report(filename)
    report.add(Issue("text_format_unconfirmed", f"the file holds plain text: {TEXT_UNCONFIRMED}", TEXT_FIX))
    return replace(result, ok=False, report={**result.report, **report.as_dict()})


def purpose_check(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {sorted(PURPOSES)}", param="purpose")


def read_limits() -> Limits:
    return Limits(
        max_line_bytes=settings.DATASET_MAX_LINE_BYTES, max_field_bytes=settings.DATASET_MAX_FIELD_BYTES,
        max_depth=settings.DATASET_MAX_DEPTH, max_uncompressed_bytes=settings.DATASET_MAX_UNCOMPRESSED_BYTES,
        max_ratio=settings.DATASET_MAX_COMPRESSION_RATIO, max_row_group_bytes=settings.DATASET_MAX_ROW_GROUP_BYTES,
    )


def image_config(path: Path, filename: str, work_dir: Path, *, split: dict | None = None):
    """What ``workers.images`` checks a vision archive with: the archive limits and the vision settings;
    ``split`` (a split operation) assigns train/validation per image."""
    from workers.images import ImageConfig

    limits = replace(read_limits(), max_archive_entries=settings.DATASET_VISION_MAX_FILES)
    return ImageConfig(path=str(path), filename=filename, output_dir=str(work_dir / "out"), limits=limits,
                       max_pixels=settings.DATASET_VISION_MAX_PIXELS,
                       max_image_bytes=settings.DATASET_VISION_MAX_IMAGE_BYTES,
                       validation_share=(split or {}).get("validation_share", 0.0), seed=(split or {}).get("seed", 42))


def validate_config(path: Path, filename: str, options: dict, work_dir: Path,
                    max_errors: int = 0) -> ValidateConfig:
    return ValidateConfig(
        path=str(path), filename=filename, output_path=str(work_dir / "train.jsonl"), work_dir=str(work_dir),
        container=options.get("container", ""), format=options.get("format", ""),
        column_map=tuple(options.get("column_map", {}).items()), limits=read_limits(), max_errors=max_errors,
    )
