"""Read settings from the environment, with typed defaults."""

import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word not in TRUE | FALSE:
        # A typo must not quietly mean "off" (or "on") for a security switch.
        raise ImproperlyConfigured(f"{name}={value!r}: write 1 or 0 (also true/false, yes/no, on/off)")
    return word in TRUE


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: write a whole number") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r}: write a number, e.g. 2.5") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def secret_key_file(path: Path) -> str:
    """The key kept in ``path``, made once (random, mode 0600) by whichever process comes first."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    try:
        os.link(draft, path)  # atomic and never overwrites: a concurrent first start keeps one key
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
                "d": 86400, "day": 86400}


def rate_parse(rate: str) -> tuple[int, int]:
    """``"600/minute"`` → (600, 60): requests allowed per that many seconds."""
    count, _, period = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or period.strip().lower() not in RATE_PERIODS:
        raise ImproperlyConfigured(f"{rate!r} is not a rate: write N/second, N/minute, N/hour or N/day")
    return int(count), RATE_PERIODS[period.strip().lower()]


def env_rate(name: str, default: str) -> str:
    """A rate like ``600/minute``, checked at startup; empty means no limit."""
    value = env_str(name, default).strip()
    if value:
        try:
            rate_parse(value)
        except ImproperlyConfigured as error:
            raise ImproperlyConfigured(f"{name}: {error}") from None
    return value
