"""Quality checks: duplicates, near-duplicates, PII (with checksums), overlap, empty turns, long rows."""

import json

import pytest

from workers.quality import QualityConfig, iban_ok, luhn_ok, pii_find, pii_mask, row_mask, run_quality

BASE = ("the quick brown fox jumps over the lazy dog near the old river bank while the birds sing songs "
        "and a farmer walks his three cows home across the green hills before the evening rain comes down")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(("text", "kind"), [
    ("write to jane.doe+work@mail.example.org today", "email"),
    ("call +44 20 7946 0958 now", "phone"),
    ("card 4111 1111 1111 1111 please", "credit_card"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
    ("server at 10.0.12.255 is down", "ip"),
    ("token sk-proj-abcdefghijklmnopqrstuvwx123", "api_key"),
    # AWS's documented example key id, assembled so no key-shaped literal sits in the repository
    ("aws " + "AKIA" + "IOSFODNN7EXAMPLE", "api_key"),
    ("gh ghp_abcdefghijklmnopqrstuvwxyz0123456789", "api_key"),
])
def test_pii_is_found_and_masked(text, kind):
    assert [found[0] for found in pii_find(text)] == [kind]
    masked, count = pii_mask(text)
    assert count == 1 and f"[{kind.upper()}]" in masked


@pytest.mark.parametrize("text", [
    "in 2024 we sold 1500 units", "card 4111 1111 1111 1112", "GB00WEST12345698765432",
    "version 1.2.3.4.5", "no personal data here",
])
def test_numbers_that_fail_their_checksum_are_not_pii(text):
    assert pii_find(text) == []


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_row_mask_keeps_roles():
    row = {"messages": [{"role": "user", "content": "mail bob@example.com"}, {"role": "assistant", "content": "ok"}]}
    masked, count = row_mask(row)
    assert count == 1 and masked["messages"][0] == {"role": "user", "content": "mail [EMAIL]"}


def test_quality_report(tmp_path):
    rows = [{"prompt": BASE, "completion": "a"}, {"prompt": BASE, "completion": "a"},
            {"prompt": BASE + " loudly", "completion": "a"},
            {"prompt": "completely different words about guitars and drums", "completion": "b"},
            {"prompt": "reach me at me@example.com", "completion": "c"},
            {"prompt": " ", "completion": "d"}, {"prompt": "long " * 10, "completion": "e"}]
    validation = [{"prompt": BASE, "completion": "a"}, {"prompt": "Completely different words about guitars and drums",
                                                          "completion": "other"}, {"prompt": "new", "completion": "x"}]
    report = run_quality(QualityConfig(path=_write(tmp_path / "t.jsonl", rows), format="prompt_completion",
                                       validation_path=_write(tmp_path / "v.jsonl", validation), long_row_chars=40))
    assert report["exact_duplicates"] == {"rows": 1, "groups": 1, "examples": [[1, 2]]}
    assert report["near_duplicates"]["examples"] == [[1, 3]]
    assert report["pii"]["email"] == {"count": 1, "rows": [5]}
    assert report["empty_turns"] == {"rows": 1, "examples": [6]}
    assert report["long_rows"]["examples"] == [1, 2, 3, 4, 7]
    overlap = report["validation_overlap"]
    assert (overlap["same_rows"], overlap["same_prompts"]) == (1, 1)
    assert overlap["examples"][1] == {"validation_row": 2, "train_row": 4, "same": "prompt"}


def test_near_threshold_is_configurable(tmp_path):
    rows = [{"text": BASE}, {"text": BASE.replace("river", "lake").replace("cows", "goats")}]
    path = _write(tmp_path / "t.jsonl", rows)
    assert run_quality(QualityConfig(path=path, format="text"))["near_duplicates"]["groups"] == 0
    assert run_quality(QualityConfig(path=path, format="text", near_threshold=0.4))["near_duplicates"]["groups"] == 1
