"""What a data check found, in a shape a user can act on.

Every problem is an ``Issue``: where (line and/or row, and the field), what is wrong, and how to
fix it. ``Report`` keeps counts for every kind of problem and the first few examples of each, so
its size stays small whatever the file's size.
"""

from dataclasses import dataclass, field

ERROR = "error"
WARNING = "warning"
EXAMPLES_PER_KIND = 5
SUMMARY_LINES = 20


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in one place.

    kind: a stable code (``invalid_json``, ``no_assistant_turn``, ...).
    message: what is wrong, in words.
    fix: what the user should do about it.
    severity: ``error`` (the data set cannot be used) or ``warning`` (it can, but look).
    line: 1-based line of a text file where the row starts; None for Parquet.
    row: 1-based row number (blank lines and a CSV header are not rows); None for the whole file.
    field: the field, e.g. ``messages[1].content``; "" for the whole row.
    """

    kind: str
    message: str
    fix: str = ""
    severity: str = ERROR
    line: int | None = None
    row: int | None = None
    field: str = ""

    def describe(self, filename: str) -> str:
        where = filename
        if self.line is not None:
            where += f", line {self.line}"
        elif self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", {self.field}"
        text = f"{where}: {self.message}"
        return f"{text}; {self.fix}" if self.fix else text

    def as_dict(self) -> dict:
        return {"line": self.line, "row": self.row, "field": self.field, "message": self.message,
                "fix": self.fix}


@dataclass
class _Kind:
    count: int = 0
    fix: str = ""
    examples: list = field(default_factory=list)


class Report:
    """Counts and first examples of every kind of issue, errors apart from warnings."""

    def __init__(self, filename: str, *, examples_per_kind: int = EXAMPLES_PER_KIND) -> None:
        self.filename = filename
        self.examples_per_kind = examples_per_kind
        self.kinds: dict[tuple[str, str], _Kind] = {}
        self.first: list[Issue] = []
        self.error_count = 0
        self.warning_count = 0
        self.stopped = ""  # where the check stopped early ("line 101"), "" when it read the whole file

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add(self, issue: Issue) -> None:
        if issue.severity == ERROR:
            self.error_count += 1
            if len(self.first) < SUMMARY_LINES:
                self.first.append(issue)
        else:
            self.warning_count += 1
        kind = self.kinds.setdefault((issue.severity, issue.kind), _Kind(fix=issue.fix))
        kind.count += 1
        if len(kind.examples) < self.examples_per_kind:
            kind.examples.append(issue)

    def summary(self) -> str:
        """The first errors, one a line, each naming the file, line and field."""
        lines = [issue.describe(self.filename) for issue in self.first]
        more = self.error_count - len(self.first)
        if self.stopped:
            lines.append(f"... and at least {more} more problems: the check stopped before {self.stopped} after "
                         f"{self.error_count} errors; fix these and upload again to check the rest")
        elif more:
            lines.append(f"... and {more} more problems")
        return "\n".join(lines)

    def grouped(self, severity: str) -> list[dict]:
        kinds = [(key[1], value) for key, value in self.kinds.items() if key[0] == severity]
        kinds.sort(key=lambda item: -item[1].count)
        return [{"kind": name, "count": value.count, "fix": value.fix,
                 "examples": [issue.as_dict() for issue in value.examples]} for name, value in kinds]

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "complete": not self.stopped,  # False: the counts are "at least", the file was not read to its end
            "errors": self.grouped(ERROR),
            "warnings": self.grouped(WARNING),
            "summary": self.summary(),
        }
