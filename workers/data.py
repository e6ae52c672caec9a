"""Read and check training files line by line, without loading them whole.

The trainer reads rows through ``jsonl_rows``/``row_format``. Uploads are checked by
``workers.validate`` (every format and container), which stores JSONL this module reads.

Supported here: JSONL with chat rows (``{"messages": [...]}``) or prompt/completion rows
(``{"prompt": "...", "completion": "..."}``). Every problem names the file, the line and
the field, and says what to do.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
ROLES = {"system", "user", "assistant", "tool"}
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with one line of a file."""

    line: int
    field: str
    message: str

    def describe(self, filename: str) -> str:
        where = f"{filename}, line {self.line}"
        return f"{where}: {self.message}" if not self.field else f"{where}, {self.field}: {self.message}"


@dataclass
class DataReport:
    """What a check found: the format, the row count and the problems (first ``MAX_PROBLEMS``)."""

    filename: str
    format: str = ""
    rows: int = 0
    problem_count: int = 0
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: DataProblem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def summary(self) -> str:
        if self.ok:
            return f"{self.filename}: {self.rows} {self.format} rows"
        more = self.problem_count - len(self.problems)
        lines = [p.describe(self.filename) for p in self.problems]
        if more:
            lines.append(f"... and {more} more problems")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "filename": self.filename,
            "format": self.format,
            "rows": self.rows,
            "problem_count": self.problem_count,
            "problems": [p.__dict__ for p in self.problems],
        }


def jsonl_check(path: Path, filename: str = "") -> DataReport:
    """Check every line of a JSONL training file; the first valid row decides the format."""
    report = DataReport(filename=filename or Path(path).name)
    for number, row, problem in _lines(path):
        if problem:
            report.add(problem)
            continue
        report.format = report.format or row_format(row)
        for found in row_problems(row, report.format, number):
            report.add(found)
        report.rows += 1
    if report.rows == 0 and report.ok:
        report.add(DataProblem(0, "", "the file has no rows; upload one JSON object per line"))
    return report


def jsonl_rows(path: Path) -> Iterator[dict]:
    """Yield the rows of a file that ``jsonl_check`` accepted."""
    for _, row, problem in _lines(path):
        if problem:
            raise ValueError(problem.describe(str(path)))
        yield row


def _lines(path: Path) -> Iterator[tuple[int, dict | None, DataProblem | None]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            yield number, *_parse(raw, number)


def _parse(raw: bytes, number: int) -> tuple[dict | None, DataProblem | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, DataProblem(
            number, "", f"not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
        )
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, DataProblem(
            number, "", f"invalid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        )
    if not isinstance(row, dict):
        return None, DataProblem(number, "", "each line must be a JSON object, not a list or value")
    return row, None


def row_format(row: dict) -> str:
    """Which format a row is written in ("" when none is recognised)."""
    if "messages" in row:
        return CHAT
    if "prompt" in row and "completion" in row:
        return PROMPT_COMPLETION
    return ""


def row_problems(row: dict, fmt: str, line: int) -> list[DataProblem]:
    """What is wrong with one row for the file's format."""
    if row_format(row) != fmt:
        expected = {CHAT: '{"messages": [...]}', PROMPT_COMPLETION: '{"prompt": ..., "completion": ...}'}
        hint = expected.get(fmt, '{"messages": [...]} or {"prompt": ..., "completion": ...}')
        return [DataProblem(line, "", f"unrecognised row; every row must look like {hint}")]
    if fmt == CHAT:
        return _chat_problems(row["messages"], line)
    return _completion_problems(row, line)


def _chat_problems(messages, line: int) -> list[DataProblem]:
    if not isinstance(messages, list) or not messages:
        return [DataProblem(line, "messages", "must be a non-empty list of {role, content}")]
    problems = []
    for index, message in enumerate(messages):
        problems += _message_problems(message, f"messages[{index}]", line)
    if problems:
        return problems
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return [DataProblem(line, "messages", "has no assistant turn; add the answer to learn")]
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        return [DataProblem(line, "messages", "every assistant turn is empty; give it content")]
    first = next((r for r in roles if r != "system"), None)
    if first != "user":
        return [DataProblem(line, "messages", "the first non-system turn must be the user's")]
    return []


def _message_problems(message, where: str, line: int) -> list[DataProblem]:
    if not isinstance(message, dict):
        return [DataProblem(line, where, "must be an object with role and content")]
    if message.get("role") not in ROLES:
        return [DataProblem(line, f"{where}.role", f"must be one of {sorted(ROLES)}")]
    if not isinstance(message.get("content"), str):
        return [DataProblem(line, f"{where}.content", "must be a string")]
    return []


def _completion_problems(row: dict, line: int) -> list[DataProblem]:
    problems = []
    for key in ("prompt", "completion"):
        if not isinstance(row[key], str):
            problems.append(DataProblem(line, key, "must be a string"))
    if not problems and not row["completion"].strip():
        problems.append(DataProblem(line, "completion", "is empty; give the text to learn"))
    return problems
