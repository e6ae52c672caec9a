"""Check a whole training file in one streaming pass and write the trainer's JSONL on the way.

``run_validation(config, emit) -> ValidationResult``: opens the file's container, decides the
row format (given, or from the first readable row), checks every row, and — when the file is not
already JSONL the trainer reads — writes the normalised rows to ``config.output_path``. Memory
stays flat whatever the file's size: one row (or one Parquet row group) at a time.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from workers.containers import JSONL, ContainerError, Limits, records_open, unencodable_field, unencodable_issue
from workers.events import Emit, ValidationProgress, emit_nothing
from workers.formats import (
    ALPACA,
    FORMATS,
    SAME_FILE,
    TRAINING_FORMAT,
    UNPAIRED,
    format_detect,
    row_check,
    row_normalise,
    unrecognised,
)
from workers.report import ERROR, Issue, Report

PROGRESS_ROWS = 8192
PROGRESS_SECONDS = 0.5


@dataclass(frozen=True)
class ValidateConfig:
    """One validation of one file.

    path: local file to read (no default).
    filename: the name the user gave it; its extension announces the container (no default).
    output_path: where to write the normalised JSONL when one is needed; default none (not written).
    work_dir: scratch directory (a Parquet file inside an archive is spilled there); default the
        system's temporary directory.
    container: jsonl|json|csv|tsv|parquet|txt|zip|gzip; default "" (from the name, checked against
        the content).
    format: one of ``workers.formats.FORMATS``; default "" (the first readable row decides).
    column_map: (source, target) pairs renaming top-level keys or columns before anything else,
        e.g. (("question", "prompt"),); default none.
    limits: sizes beyond which a file is refused (see ``Limits``); default ``Limits()``.
    examples_per_kind: problems kept as examples for each kind; the rest are counted; default 5.
    max_errors: stop reading once this many errors were found (the report says where it stopped and
        its counts are then "at least"), which bounds a check made while a user waits; default 0
        (read the whole file).
    """

    path: str
    filename: str
    output_path: str | None = None
    work_dir: str | None = None
    container: str = ""
    format: str = ""
    column_map: tuple[tuple[str, str], ...] = ()
    limits: Limits = field(default_factory=Limits)
    examples_per_kind: int = 5
    max_errors: int = 0

    def __post_init__(self) -> None:
        if self.format and self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {self.format!r}")


@dataclass(frozen=True)
class ValidationResult:
    """What a validation found.

    ok: no hard error; the data set can be used.
    container / inner: the file's container, and what an archive holds ("" otherwise).
    format: the rows' format; training_format: what the trainer reads ("" for preference pairs,
        marked answers and prompts, which need an objective of their own).
    rows: rows read (good and bad); bytes: size of the file.
    normalised: True when ``output_path`` was written and holds the trainer's rows.
    report: the JSON report (counts and examples of every kind of problem, summary).
    """

    ok: bool
    container: str
    inner: str
    format: str
    training_format: str
    rows: int
    bytes: int
    normalised: bool
    report: dict

    @property
    def summary(self) -> str:
        return self.report["summary"]


def run_validation(config: ValidateConfig, emit: Emit = emit_nothing) -> ValidationResult:
    """Check every row of ``config.path``; see the module docstring."""
    path = Path(config.path)
    total = path.stat().st_size
    report = Report(config.filename, examples_per_kind=config.examples_per_kind)
    state = _State(fmt=config.format, column_map=dict(config.column_map))
    container = inner = ""
    try:
        container, inner, records, position = records_open(
            path, config.filename, config.limits, container=config.container,
            work_dir=Path(config.work_dir) if config.work_dir else None)
        _check_all(config, records, position, total, report, state, emit)
    except ContainerError as exc:
        report.add(exc.issue)
    finally:
        if state.out is not None:
            state.out.close()
    if state.rows == 0 and report.ok:
        report.add(Issue("no_rows", "the file has no rows", "upload one row per line (or per array element)"))
    if state.rows and not state.fmt and report.ok:
        report.add(Issue("unrecognised_row", "no row has a known format", "see the formats in the README"))
    if state.fmt == UNPAIRED and report.ok and len(state.labels) < 2:
        report.add(_one_sided(state.labels))
    fmt = state.fmt
    result = ValidationResult(
        ok=report.ok, container=container, inner=inner, format=fmt, training_format=TRAINING_FORMAT.get(fmt, ""),
        rows=state.rows, bytes=total, normalised=state.out is not None and report.ok,
        report={"filename": config.filename, "container": container, "inner_container": inner, "format": fmt,
                "format_given": bool(config.format), "training_format": TRAINING_FORMAT.get(fmt, ""),
                "column_map": dict(config.column_map), "rows": state.rows, "bytes": total, **report.as_dict()},
    )
    emit(ValidationProgress(total, total, state.rows))
    return result


@dataclass
class _State:
    fmt: str
    column_map: dict
    rows: int = 0
    out: object = None
    labels: set = field(default_factory=set)  # of the marked answers (unpaired preference rows)


def _check_all(config, records, position, total, report: Report, state: _State, emit: Emit) -> None:
    fmt, column_map = state.fmt, state.column_map
    max_field = config.limits.max_field_bytes
    write = None
    next_progress, last_time = PROGRESS_ROWS, time.monotonic()
    for row, line, value, issue in records:
        if config.max_errors and report.error_count >= config.max_errors:
            report.stopped = f"line {line}" if line is not None else f"row {row}"
            return
        state.rows = row
        if row >= next_progress:
            next_progress += PROGRESS_ROWS
            now = time.monotonic()
            if now - last_time >= PROGRESS_SECONDS:
                last_time = now
                emit(ValidationProgress(min(position(), total), total, row))
        if issue is not None:
            report.add(issue)
            continue
        if type(value) is not dict:
            report.add(Issue("not_an_object", "each row must be a JSON object, not a list or value",
                             'write one object per row, e.g. {"prompt": ..., "completion": ...}', line=line, row=row))
            continue
        if column_map:
            value = {column_map.get(key, key): item for key, item in value.items()}
        if not fmt:
            fmt = state.fmt = format_detect(value)
            if not fmt:
                _add(report, unrecognised(value, ""), line, row)
                continue
            if _needs_normalising(config, state.fmt):
                state.out = open(config.output_path, "w", encoding="utf-8")
                write = state.out.write
        elif not config.format and (detected := format_detect(value)) != fmt and (fmt, detected) not in SAME_FILE:
            _add(report, unrecognised(value, fmt), line, row)
            continue
        problems = row_check(value, fmt, max_field)
        failed = False
        for problem in problems:
            _add(report, problem, line, row)
            failed = failed or problem[4] == ERROR
        if fmt == UNPAIRED and not failed:
            state.labels.add(value["label"])
        if write is not None and not failed and report.ok:
            normal = row_normalise(value, fmt)
            try:
                write(json.dumps(normal, ensure_ascii=False, default=str) + "\n")
            except UnicodeEncodeError:  # a lone surrogate decoded later, e.g. from JSON in a CSV cell
                report.add(unencodable_issue(unencodable_field(normal) or "", line, row))


def _one_sided(labels: set) -> Issue:
    """KTO learns from the contrast between good and bad answers: a file of one kind teaches nothing."""
    kind = "good (label true)" if True in labels else "bad (label false)"
    other = "false" if True in labels else "true"
    return Issue("one_sided_labels", f"every answer is marked {kind}; KTO needs both good and bad answers",
                 f'add rows with "label": {other}, or train the good answers with supervised fine-tuning')


def _needs_normalising(config: ValidateConfig, fmt: str) -> bool:
    if not config.output_path:
        return False
    return bool(config.column_map) or fmt == ALPACA or config.container not in ("", JSONL) or \
        not config.filename.lower().endswith((".jsonl", ".ndjson"))


def _add(report: Report, problem, line, row) -> None:
    kind, field_, message, fix, severity = problem
    report.add(Issue(kind, message, fix, severity=severity, line=line, row=row, field=field_))
