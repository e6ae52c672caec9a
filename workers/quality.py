"""Quality checks no trainer makes: duplicates, near-duplicates, personal data, leaks, long rows.

``run_quality(config, emit) -> dict`` reads normalised rows once: exact duplicates (a digest of
each row), near-duplicates (MinHash over word 3-grams with LSH banding, groups verified against
``near_threshold``), PII (e-mail, phone, credit card with Luhn, IBAN with its checksum, IP, API-key-
like strings) with counts and row numbers, train/validation overlap, empty turns and very long
rows. ``pii_mask`` replaces what the scan finds; preparation uses it.
"""

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass

from workers.events import Emit, ValidationProgress, emit_nothing
from workers.formats import CHAT, PROMPT_COMPLETION, jsonl_rows, row_texts
from workers.grouping import Groups

MERSENNE = (1 << 61) - 1


@dataclass(frozen=True)
class QualityConfig:
    """One quality pass over a normalised training file.

    path: local JSONL of normalised rows (no default).
    format: the rows' format: chat|prompt_completion|text|preference (no default).
    validation_path: a normalised validation file to check for rows shared with ``path``; default none.
    near_threshold: estimated Jaccard similarity (0..1) from which two rows are near-duplicates; 0.85.
    num_perm: MinHash permutations (more: a finer estimate, slower); default 64.
    bands: LSH bands (num_perm must divide by it; more bands find less similar pairs); default 16.
    max_near_rows: rows compared for near-duplicates at most (the first ones); default 200000.
    long_row_chars: characters from which a row counts as very long; default 32000.
    examples: groups / row numbers kept per finding; default 10.
    """

    path: str
    format: str
    validation_path: str | None = None
    near_threshold: float = 0.85
    num_perm: int = 64
    bands: int = 16
    max_near_rows: int = 200_000
    long_row_chars: int = 32_000
    examples: int = 10


# --- PII ---------------------------------------------------------------------------------------------

_PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "api_key": re.compile(r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22,}"
                          r"|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}"
                          r"|glpat-[A-Za-z0-9_-]{20})\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
    "credit_card": re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"),
    "ip": re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,3}(?![\w])"),
}
PII_KINDS = tuple(_PATTERNS)
_MASKS = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _valid(kind: str, found: str) -> bool:
    if kind == "credit_card":
        return luhn_ok(found)
    if kind == "iban":
        return iban_ok(found)
    if kind == "phone":
        return 9 <= sum(c.isdigit() for c in found) <= 15
    return True


def pii_find(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every piece of personal data in ``text``, without overlaps."""
    spans: list[tuple[str, int, int]] = []
    taken: list[tuple[int, int]] = []
    if not any(c.isdigit() or c == "@" for c in text) and "sk-" not in text and "_" not in text:
        return spans  # most rows: nothing a pattern could match
    for kind, pattern in _PATTERNS.items():  # ordered so an e-mail is not read as something else first
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            if _valid(kind, match.group()):
                spans.append((kind, start, end))
                taken.append((start, end))
    return sorted(spans, key=lambda span: span[1])


def pii_mask(text: str, kinds: tuple[str, ...] = PII_KINDS) -> tuple[str, int]:
    """``text`` with each found piece of personal data of ``kinds`` replaced by ``[KIND]``; and how many."""
    spans = [s for s in pii_find(text) if s[0] in kinds]
    for kind, start, end in reversed(spans):
        text = text[:start] + _MASKS[kind] + text[end:]
    return text, len(spans)


def row_mask(row: dict, kinds: tuple[str, ...] = PII_KINDS) -> tuple[dict, int]:
    """Every string in a row masked (see ``pii_mask``); and how many pieces were masked."""
    count = 0

    def walk(value):
        nonlocal count
        if isinstance(value, str):
            masked, found = pii_mask(value, kinds)
            count += found
            return masked
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) if key not in ("role", "tool_call_id") else item for key, item in value.items()}
        return value

    return walk(row), count


# --- near duplicates ---------------------------------------------------------------------------------

def shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}


class MinHasher:
    """MinHash signatures over 64-bit shingle digests (seeded, so signatures are reproducible)."""

    def __init__(self, num_perm: int, seed: int = 1) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self.np = np
        self.a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.uint64)

    def signature(self, items: set[str]):
        np = self.np
        if not items:
            return np.full(len(self.a), MERSENNE, dtype=np.uint64)
        digests = np.fromiter((int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                               >> 3 for s in items), dtype=np.uint64, count=len(items))
        # (a * x + b) mod p, in uint64 with wrap-around: a standard cheap universal hash family
        hashed = (self.a[:, None] * digests[None, :] + self.b[:, None]) % np.uint64(MERSENNE)
        return hashed.min(axis=1)


def near_duplicate_groups(signatures: list, *, bands: int, threshold: float) -> list[list[int]]:
    """Groups of row indexes whose signatures agree on at least ``threshold`` of their positions."""
    if not signatures:
        return []
    width = len(signatures[0]) // bands
    found = Groups(len(signatures))
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for index, signature in enumerate(signatures):
            buckets[signature[band * width:(band + 1) * width].tobytes()].append(index)
        for members in buckets.values():
            first = members[0]
            for other in members[1:]:
                if not found.together(first, other) and \
                        (signatures[first] == signatures[other]).mean() >= threshold:
                    found.join(other, first)
    return sorted((g for g in found.members() if len(g) > 1), key=len, reverse=True)


# --- the pass ----------------------------------------------------------------------------------------

def row_digest(row: dict) -> bytes:
    """A 16-byte digest of a row's content (key order aside): equal rows, equal digests."""
    return hashlib.blake2b(json.dumps(row, sort_keys=True, ensure_ascii=False).encode(), digest_size=16).digest()


def _empty_turns(row: dict, fmt: str) -> bool:
    if fmt == CHAT:
        return any(not (m.get("content") or "").strip() and not m.get("tool_calls") for m in row["messages"])
    if fmt == PROMPT_COMPLETION:
        return not row["prompt"].strip() or not row["completion"].strip()
    return False


def run_quality(config: QualityConfig, emit: Emit = emit_nothing) -> dict:
    """See the module docstring; returns the quality report as JSON-ready data."""
    keep = config.examples
    hasher = MinHasher(config.num_perm)
    first_of: dict[bytes, int] = {}
    exact: dict[int, list[int]] = defaultdict(list)
    signatures, signature_rows = [], []
    pii_rows: dict[str, list[int]] = {kind: [] for kind in PII_KINDS}
    pii_counts = dict.fromkeys(PII_KINDS, 0)
    long_rows, empty_rows = [], []
    long_count = empty_count = rows = 0
    prompts: dict[bytes, int] = {}
    for number, row in enumerate(jsonl_rows(config.path), start=1):
        rows = number
        digest = row_digest(row)
        copy = digest in first_of
        if copy:
            exact[first_of[digest]].append(number)
        else:
            first_of[digest] = number
        prompt, target = row_texts(row, config.format)
        text = prompt + "\n" + target
        if prompt:
            prompts.setdefault(hashlib.blake2b(prompt.strip().lower().encode(), digest_size=16).digest(), number)
        if not copy and len(signatures) < config.max_near_rows:  # exact copies are reported above
            signatures.append(hasher.signature(shingles(text)))
            signature_rows.append(number)
        found_kinds = set()
        for kind, _, _ in pii_find(text):
            pii_counts[kind] += 1
            found_kinds.add(kind)
        for kind in found_kinds:
            if len(pii_rows[kind]) < keep:
                pii_rows[kind].append(number)
        if len(text) > config.long_row_chars:
            long_count += 1
            if len(long_rows) < keep:
                long_rows.append(number)
        if _empty_turns(row, config.format):
            empty_count += 1
            if len(empty_rows) < keep:
                empty_rows.append(number)
        if number % 5000 == 0:
            emit(ValidationProgress(number, 0, number))
    near = [[signature_rows[i] for i in group] for group in
            near_duplicate_groups(signatures, bands=config.bands, threshold=config.near_threshold)]
    exact_groups = sorted(([first, *dups] for first, dups in exact.items()), key=len, reverse=True)
    report = {
        "rows": rows,
        "exact_duplicates": {"rows": sum(len(g) - 1 for g in exact_groups), "groups": len(exact_groups),
                             "examples": [g[:keep] for g in exact_groups[:keep]]},
        "near_duplicates": {"threshold": config.near_threshold, "rows": sum(len(g) - 1 for g in near),
                            "groups": len(near), "examples": [g[:keep] for g in near[:keep]],
                            "rows_compared": len(signatures)},
        "pii": {kind: {"count": pii_counts[kind], "rows": pii_rows[kind]} for kind in PII_KINDS},
        "empty_turns": {"rows": empty_count, "examples": empty_rows},
        "long_rows": {"chars": config.long_row_chars, "rows": long_count, "examples": long_rows},
        "validation_overlap": None,
    }
    if config.validation_path:
        report["validation_overlap"] = _overlap(config, first_of, prompts)
    return report


def validation_overlap(train_path: str, validation_path: str, fmt: str, *, examples: int = 10) -> dict:
    """Validation rows that also appear in training, whole or by their prompt (one pass over each file)."""
    rows: dict[bytes, int] = {}
    prompts: dict[bytes, int] = {}
    for number, row in enumerate(jsonl_rows(train_path), start=1):
        rows.setdefault(row_digest(row), number)
        prompt, _ = row_texts(row, fmt)
        if prompt:
            prompts.setdefault(hashlib.blake2b(prompt.strip().lower().encode(), digest_size=16).digest(), number)
    config = QualityConfig(path=train_path, format=fmt, validation_path=validation_path, examples=examples)
    return _overlap(config, rows, prompts)


def _overlap(config: QualityConfig, train_rows: dict[bytes, int], train_prompts: dict[bytes, int]) -> dict:
    same_rows, same_prompts, examples, checked = 0, 0, [], 0
    for number, row in enumerate(jsonl_rows(config.validation_path), start=1):
        checked += 1
        prompt, _ = row_texts(row, config.format)
        train_row = train_rows.get(row_digest(row))
        train_prompt = train_prompts.get(hashlib.blake2b(prompt.strip().lower().encode(), digest_size=16).digest()) \
            if prompt else None
        if train_row:
            same_rows += 1
        elif train_prompt:
            same_prompts += 1
        if (train_row or train_prompt) and len(examples) < config.examples:
            examples.append({"validation_row": number, "train_row": train_row or train_prompt,
                             "same": "row" if train_row else "prompt"})
    return {"validation_rows": checked, "same_rows": same_rows, "same_prompts": same_prompts, "examples": examples}


# --- a quality score per row ------------------------------------------------------------------------

def text_quality(text: str) -> float:
    """How much ``text`` reads like prose worth training on, 0..1 (1: no problem found), from the
    heuristics of Gopher's and C4's filters: very short texts, few letters among the characters,
    odd mean word length, repeated lines and repeated word 3-grams each lower it."""
    words = re.findall(r"\w+", text)
    if not words:
        return 0.0
    score = 1.0
    if len(words) < 3:
        score *= 0.5
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible) / len(visible)
    if letters < 0.6:
        score *= letters / 0.6
    mean_length = sum(map(len, words)) / len(words)
    if not 2 <= mean_length <= 12:
        score *= 0.5
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        score *= len(set(lines)) / len(lines)
    lowered = [w.lower() for w in words]
    grams = [tuple(lowered[i:i + 3]) for i in range(len(lowered) - 2)]
    if len(grams) > 1:
        score *= 0.25 + 0.75 * len(set(grams)) / len(grams)
    return round(score, 3)


def row_quality(row: dict, fmt: str) -> float:
    """``text_quality`` of a row's text; 0 for a row with an empty turn (an answer that says nothing)."""
    if _empty_turns(row, fmt):
        return 0.0
    prompt, answer = row_texts(row, fmt)
    return text_quality("\n".join(part for part in (prompt, answer) if part))
