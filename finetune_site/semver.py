"""Semantic versions (``1.4.0``) of the model registry: parsing and text, shared by the job that asks for
a version and the registry that gives it (no prerelease or build parts: a registry version is three
numbers)."""

import re

Semver = tuple[int, int, int]
_SEMVER = re.compile(r"(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})")


def semver_parse(text) -> Semver | None:
    """``(major, minor, patch)`` of ``"1.4.0"``; None when ``text`` is not a plain semantic version."""
    match = _SEMVER.fullmatch(text) if isinstance(text, str) else None
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def semver_text(version: Semver) -> str:
    return ".".join(str(part) for part in version)
