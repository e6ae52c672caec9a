"""Events the engine reports while it works; the caller decides where they go."""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """Training advanced to ``step`` of ``total_steps``; ``tokens`` seen so far."""

    step: int
    total_steps: int
    tokens: int = 0


@dataclass(frozen=True)
class Metric:
    """Values logged at ``step`` (loss, learning_rate, grad_norm, epoch, ...)."""

    step: int
    total_steps: int
    values: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    """A human-readable line for the job's log."""

    message: str
    level: str = "info"


@dataclass(frozen=True)
class ArtifactSaved:
    """A directory of files is complete on local disk (``kind``: checkpoint|adapter|model)."""

    kind: str
    path: str
    step: int = 0
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationProgress:
    """A data check has read ``bytes_done`` of ``bytes_total`` bytes and ``rows`` rows."""

    bytes_done: int
    bytes_total: int
    rows: int


Event = Progress | Metric | LogLine | ArtifactSaved | ValidationProgress
Emit = Callable[[Event], None]


def emit_nothing(event: Event) -> None:
    """An ``emit`` for callers that do not care about events."""
