"""The streaming validator: every format and container, and every hostile input, with limits."""

import gzip
import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.containers import Limits
from workers.events import ValidationProgress
from workers.sample_data import tool_call_row
from workers.validate import ValidateConfig, run_validation

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _check(tmp_path, name: str, content, **options):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return run_validation(ValidateConfig(path=str(path), filename=name, output_path=str(tmp_path / "out.jsonl"),
                                         work_dir=str(tmp_path), **options))


def _out(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def _errors(result) -> dict[str, dict]:
    return {group["kind"]: group for group in result.report["errors"]}


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# --- formats -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("row", "fmt", "training"), [
    (CHAT, "chat", "chat"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "weather?"},
                   {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                                                        "function": {"name": "w"}}]},
                   {"role": "tool", "tool_call_id": "1", "content": "sunny"},
                   {"role": "assistant", "content": "It is sunny."}]}, "chat", "chat"),
    ({"instruction": "Add", "input": "1+1", "output": "2"}, "alpaca", "chat"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion", "prompt_completion"),
    ({"text": "a document"}, "text", "text"),
    ({"prompt": "q", "chosen": "good", "rejected": "bad"}, "preference", ""),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "good"}],
      "non_preferred_output": [{"role": "assistant", "content": "bad"}]}, "preference", ""),
])
def test_each_format_is_detected(tmp_path, row, fmt, training):
    result = _check(tmp_path, "data.jsonl", _lines(row, row))
    assert result.ok, result.summary
    assert (result.format, result.training_format, result.rows) == (fmt, training, 2)


def test_alpaca_rows_become_chat_rows_for_the_trainer(tmp_path):
    result = _check(tmp_path, "a.jsonl", _lines({"instruction": "Add", "input": "1+1", "output": "2"},
                                                {"instruction": "Say hi", "output": "hi"}))
    assert result.normalised
    assert _out(tmp_path) == [
        {"messages": [{"role": "user", "content": "Add\n\n1+1"}, {"role": "assistant", "content": "2"}]},
        {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]},
    ]


def test_jsonl_chat_is_kept_as_uploaded(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT))
    assert result.ok and not result.normalised and not (tmp_path / "out.jsonl").exists()


def test_format_can_be_overridden(tmp_path):
    rows = _lines({"prompt": "a", "completion": "b", "text": "x"})
    assert _check(tmp_path, "t.jsonl", rows).format == "prompt_completion"
    result = _check(tmp_path, "t.jsonl", rows, format="text")
    assert result.ok and result.format == "text" and result.report["format_given"]


def test_override_names_missing_fields(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines({"prompt": "a"}), format="prompt_completion")
    assert _errors(result)["missing_field"]["examples"][0]["field"] == "completion"


@pytest.mark.parametrize(("row", "kind", "field"), [
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "wrong_role_order", "messages"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "b"}]}, "wrong_role_order", "messages[1].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "t"},
                   {"role": "assistant", "content": "b"}]}, "wrong_role_order", "messages[1].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
     "empty_assistant", "messages"),
    ({"messages": [{"role": "bot", "content": "a"}]}, "bad_role", "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "not_a_string", "messages[0].content"),
    ({"prompt": "a", "completion": " "}, "empty_completion", "completion"),
    ({"instruction": "a", "output": ""}, "empty_completion", "output"),
    ({"text": ""}, "empty_text", "text"),
    ({"question": "a", "answer": "b"}, "unrecognised_row", ""),
])
def test_hard_errors_name_kind_line_and_field(tmp_path, row, kind, field):
    result = _check(tmp_path, "t.jsonl", _lines(row))
    assert not result.ok
    example = _errors(result)[kind]["examples"][0]
    assert (example["line"], example["row"], example["field"]) == (1, 1, field)
    assert example["message"] and _errors(result)[kind]["fix"]


def test_a_chat_row_missing_its_answer_is_still_named_in_a_chat_file(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT, {"messages": [{"role": "user", "content": "hi"}]}))
    assert not result.ok and result.format == "chat"
    assert _errors(result)["no_assistant_turn"]["examples"][0]["line"] == 2


def test_prompts_without_answers_are_a_prompt_only_file_keeping_every_field(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"2 + {i}?"}], "answer": str(2 + i), "meta": {"n": i}}
            for i in range(3)]
    result = _check(tmp_path, "t.jsonl", _lines(*rows))
    assert result.ok and (result.format, result.training_format) == ("prompt_only", "")
    answered = _check(tmp_path, "u.jsonl", _lines(rows[0], CHAT))
    assert _errors(answered)["has_answer"]["examples"][0]["line"] == 2


def test_kto_rows_mark_one_answer_good_or_bad(tmp_path):
    good = {"prompt": "Say hi", "completion": "Hi!", "label": True}
    result = _check(tmp_path, "t.jsonl", _lines(good, {**good, "label": False}))
    assert result.ok and (result.format, result.training_format) == ("unpaired_preference", "")
    bad = _check(tmp_path, "u.jsonl", _lines(good, {**good, "label": "yes"}))
    example = _errors(bad)["bad_label"]["examples"][0]
    assert (example["line"], example["field"]) == (2, "label")


def _calling(call: dict) -> dict:
    return {"messages": [{"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "1", "content": "sunny"},
                         {"role": "assistant", "content": "Sunny."}]}


@pytest.mark.parametrize(("row", "kind", "field"), [
    (_calling({"id": "1", "type": "function", "function": {"arguments": "{}"}}),
     "bad_tool_calls", "messages[1].tool_calls[0].function.name"),
    (_calling({"id": "1", "type": "function"}), "bad_tool_calls", "messages[1].tool_calls[0].function"),
    (_calling({"id": "1", "type": "function", "function": {"name": "w", "arguments": "{city: Paris"}}),
     "bad_tool_arguments", "messages[1].tool_calls[0].function.arguments"),
    (_calling({"id": "1", "type": "function", "function": {"name": "w", "arguments": "[1, 2]"}}),
     "bad_tool_arguments", "messages[1].tool_calls[0].function.arguments"),
    ({**tool_call_row(), "tools": [{"type": "function", "function": {"parameters": {}}}]},
     "bad_tools", "tools[0].function.name"),
    ({**tool_call_row(), "tools": "get_weather"}, "bad_tools", "tools"),
])
def test_bad_tool_calls_name_file_line_and_field(tmp_path, row, kind, field):
    result = _check(tmp_path, "tools.jsonl", _lines(CHAT, row))
    assert not result.ok
    example = _errors(result)[kind]["examples"][0]
    assert (example["line"], example["field"]) == (2, field)
    assert result.summary.startswith(f"tools.jsonl, line 2, {field}: ")


def test_tool_calling_rows_keep_their_calls_and_tools_when_normalised(tmp_path):
    row = tool_call_row()
    result = _check(tmp_path, "tools.json", json.dumps([row]))  # not JSONL: written out for the trainer
    assert result.ok and result.normalised, result.summary
    [out] = _out(tmp_path)
    assert out["tools"] == row["tools"]
    assert out["messages"][1]["tool_calls"] == row["messages"][1]["tool_calls"]
    assert out["messages"][2]["tool_call_id"] == "call_1"


@pytest.mark.parametrize(("label", "words"), [(True, "every answer is marked good"),
                                               (False, "every answer is marked bad")])
def test_marked_answers_of_one_kind_only_are_refused_naming_the_file(tmp_path, label, words):
    row = {"prompt": "Say hi", "completion": "Hi!", "label": label}
    result = _check(tmp_path, "one-sided.jsonl", _lines(row, {**row, "prompt": "Say bye"}))
    assert not result.ok and "one_sided_labels" in _errors(result)
    assert result.summary.startswith("one-sided.jsonl") and words in result.summary, result.summary


def test_warnings_do_not_block(tmp_path):
    row = {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "more?"}]}
    result = _check(tmp_path, "t.jsonl", _lines(row, {"messages": row["messages"][:2]}))
    assert result.ok and result.report["warning_count"] == 3
    kinds = {w["kind"]: w["count"] for w in result.report["warnings"]}
    assert kinds == {"empty_turn": 2, "trailing_turn": 1}


def test_mixed_formats_are_rejected_on_the_line(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT, {"prompt": "a", "completion": "b"}))
    assert _errors(result)["wrong_format"]["examples"][0]["line"] == 2


def test_report_keeps_examples_per_kind_and_counts_the_rest(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT) + "nope\n" * 50)
    group = _errors(result)["invalid_json"]
    assert group["count"] == 50 and len(group["examples"]) == 5
    assert [e["line"] for e in group["examples"]] == [2, 3, 4, 5, 6]
    assert "... and 30 more problems" in result.summary


def test_max_errors_stops_reading_and_says_the_counts_are_at_least(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT) + "{}\n" * 5000, max_errors=100)
    assert not result.ok and result.rows == 101  # the good row and the first hundred bad ones, no more
    assert result.report["error_count"] == 100 and result.report["complete"] is False
    assert ("... and at least 80 more problems: the check stopped before line 102 after 100 errors; fix these "
            "and upload again to check the rest") in result.summary
    assert "t.jsonl, line 2:" in result.summary
    assert _check(tmp_path, "t.jsonl", "{}\n" * 500).report["complete"] is True  # no limit: the whole file


# --- containers --------------------------------------------------------------------------------

def test_json_array_is_streamed_with_line_numbers(tmp_path):
    text = "[\n" + ",\n".join(json.dumps(r) for r in [CHAT, CHAT, {"messages": []}]) + "\n]\n"
    result = _check(tmp_path, "t.json", text)
    assert result.rows == 3 and _errors(result)["bad_messages"]["examples"][0]["line"] == 4


def test_json_array_spanning_many_buffers(tmp_path):
    big = {"prompt": "p" * 300_000, "completion": "c"}
    result = _check(tmp_path, "t.json", json.dumps([big] * 8))
    assert result.ok and result.rows == 8 and len(_out(tmp_path)) == 8


def test_csv_with_column_mapping(tmp_path):
    text = 'question,answer,source\nWhat is 2+2?,4,a\n"Two\nlines",ok,b\n'
    result = _check(tmp_path, "t.csv", text, column_map=(("question", "prompt"), ("answer", "completion")))
    assert result.ok and result.format == "prompt_completion" and result.rows == 2
    assert _out(tmp_path)[1] == {"prompt": "Two\nlines", "completion": "ok", "source": "b"}  # kept for splits


def test_csv_row_with_wrong_column_count_names_its_line(tmp_path):
    result = _check(tmp_path, "t.csv", "prompt,completion\na,b\nc\n")
    assert _errors(result)["wrong_column_count"]["examples"][0]["line"] == 3


def test_csv_messages_column_holds_json(tmp_path):
    cell = json.dumps(CHAT["messages"]).replace('"', '""')
    result = _check(tmp_path, "t.csv", f'messages\n"{cell}"\n')
    assert result.ok and _out(tmp_path) == [CHAT]


def test_tsv_alpaca(tmp_path):
    result = _check(tmp_path, "t.tsv", "instruction\tinput\toutput\nSay hi\t\thi\n")
    assert result.ok and result.format == "alpaca"


def test_plain_text_lines_are_documents(tmp_path):
    result = _check(tmp_path, "corpus.txt", "first document\n\nsecond document\n")
    assert result.ok and result.format == "text" and _out(tmp_path) == [{"text": "first document"},
                                                                        {"text": "second document"}]


def test_parquet_is_read_by_row_groups(tmp_path):
    table = pa.table({"prompt": [f"p{i}" for i in range(100)], "completion": [f"c{i}" for i in range(100)]})
    pq.write_table(table, tmp_path / "src.parquet", row_group_size=30)
    result = _check(tmp_path, "t.parquet", (tmp_path / "src.parquet").read_bytes())
    assert result.ok and result.rows == 100 and _out(tmp_path)[99] == {"prompt": "p99", "completion": "c99"}


def test_parquet_row_group_over_the_limit_is_refused(tmp_path):
    import os

    pq.write_table(pa.table({"text": [os.urandom(500).hex() for _ in range(100)]}), tmp_path / "src.parquet")
    result = _check(tmp_path, "t.parquet", (tmp_path / "src.parquet").read_bytes(),
                    limits=Limits(max_row_group_bytes=10_000))
    assert "row_group_too_large" in _errors(result)


def test_gzip_and_zip_hold_any_container(tmp_path):
    assert _check(tmp_path, "t.jsonl.gz", gzip.compress(_lines(CHAT, CHAT).encode())).rows == 2
    result = _check(tmp_path, "t.zip", _zip({"data/train.csv": b"prompt,completion\na,b\n", "__MACOSX/x": b"",
                                             "data/.DS_Store": b""}))
    assert result.ok and (result.container, result.inner, result.format) == ("zip", "csv", "prompt_completion")
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "src.parquet")
    result = _check(tmp_path, "p.zip", _zip({"t.parquet": (tmp_path / "src.parquet").read_bytes()}))
    assert result.ok and result.inner == "parquet" and result.rows == 2


def test_progress_is_reported(tmp_path):
    events = []
    path = tmp_path / "t.jsonl"
    path.write_text(_lines(*[CHAT] * 10))
    run_validation(ValidateConfig(path=str(path), filename="t.jsonl"), events.append)
    assert events[-1] == ValidationProgress(path.stat().st_size, path.stat().st_size, 10)


# --- hostile input: each is refused with a clear report, in bounded memory ---------------------

def test_zip_slip_path_is_refused(tmp_path):
    result = _check(tmp_path, "t.zip", _zip({"../../etc/evil.jsonl": _lines(CHAT).encode()}))
    assert "unsafe_archive_path" in _errors(result) and "../../etc/evil.jsonl" in result.summary
    assert not (tmp_path.parent.parent / "etc" / "evil.jsonl").exists()


@pytest.mark.parametrize("name", ["/abs/train.jsonl", "C:\\train.jsonl", "a\\..\\..\\b.jsonl"])
def test_zip_with_absolute_or_windows_path_is_refused(tmp_path, name):
    assert "unsafe_archive_path" in _errors(_check(tmp_path, "t.zip", _zip({name: b"{}\n"})))


def test_zip_bomb_ratio_is_refused_before_expanding(tmp_path):
    result = _check(tmp_path, "t.zip", _zip({"t.jsonl": b" " * (64 << 20)}))
    assert "archive_ratio" in _errors(result) and "zip bomb" in result.summary


def test_zip_bomb_with_a_lying_header_is_stopped_while_streaming(tmp_path):
    data = bytearray(_zip({"t.jsonl": b"\n" * (8 << 20)}))
    # Rewrite the declared sizes in both headers to look harmless: the stream itself must stop.
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22:local + 26] = (1000).to_bytes(4, "little")
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")
    result = _check(tmp_path, "t.zip", bytes(data), limits=Limits(max_ratio=100))
    assert "broken_archive" in _errors(result) and result.rows == 0  # zipfile stops at the declared size


def test_gzip_bomb_is_stopped_at_the_size_limit(tmp_path):
    result = _check(tmp_path, "t.jsonl.gz", gzip.compress(_lines(CHAT).encode() + b"\n" * (32 << 20)),
                    limits=Limits(max_uncompressed_bytes=4 << 20, max_ratio=10_000))
    assert "archive_too_large" in _errors(result)


def test_archive_with_several_files_or_an_archive_inside_is_refused(tmp_path):
    assert "archive_members" in _errors(_check(tmp_path, "t.zip", _zip({"a.jsonl": b"{}", "b.jsonl": b"{}"})))
    inner = gzip.compress(_lines(CHAT).encode())
    assert "nested_archive" in _errors(_check(tmp_path, "t.zip", _zip({"t.jsonl.gz": inner})))


def test_deeply_nested_json_is_refused_without_recursing(tmp_path):
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    result = _check(tmp_path, "t.jsonl", _lines(CHAT) + deep + "\n" + _lines(CHAT))
    assert _errors(result)["too_deeply_nested"]["examples"][0]["line"] == 2 and result.rows == 3
    moderately = '{"a": ' * 40 + "1" + "}" * 40
    assert "too_deeply_nested" in _errors(_check(tmp_path, "m.jsonl", moderately + "\n"))
    array = "[" + json.dumps(CHAT) + ", " + "[" * 50_000 + "]" * 50_000 + "]"
    assert _errors(_check(tmp_path, "t.json", array))["too_deeply_nested"]["examples"][0]["row"] == 2


def test_one_gigabyte_line_is_refused_in_bounded_memory(tmp_path):
    import resource

    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as handle:  # written a block at a time: 1 GiB on disk, never in memory
        handle.write(_lines(CHAT).encode() + b'{"text": "')
        block = b"x" * (1 << 20)
        for _ in range(1024):
            handle.write(block)
        handle.write(b'"}\n' + _lines(CHAT).encode())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = run_validation(ValidateConfig(path=str(path), filename="huge.jsonl"))
    finally:
        path.unlink()  # pytest keeps old temporary directories: do not leave 1 GiB behind
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert _errors(result)["line_too_long"]["examples"][0]["line"] == 2 and result.rows == 3
    assert "32 MiB" in result.summary and grown_mib < 150


def test_invalid_utf8_at_line_n(tmp_path):
    result = _check(tmp_path, "t.jsonl", _lines(CHAT, CHAT).encode() + b'{"text": "\xff\xfe"}\n')
    assert "t.jsonl, line 3: not valid UTF-8" in result.summary
    assert "invalid_utf8" in _errors(_check(tmp_path, "t.csv", b"text\nok\n\xff\xfe\n"))


def test_csv_with_a_huge_field_is_refused(tmp_path):
    quoted = b"text\nfine\n\"" + b"word\n" * (2 << 20) + b"\"\n"  # a 10 MiB quoted field over many lines
    result = _check(tmp_path, "t.csv", quoted, limits=Limits(max_field_bytes=1 << 20))
    assert "bad_csv" in _errors(result) and "field" in result.summary
    one_line = b"text\n" + b"x" * (3 << 20) + b"\n"
    result = _check(tmp_path, "u.csv", one_line, limits=Limits(max_line_bytes=1 << 20))
    assert _errors(result)["line_too_long"]["examples"][0]["line"] == 2


def test_truncated_parquet_is_refused(tmp_path):
    pq.write_table(pa.table({"text": ["a"] * 100}), tmp_path / "src.parquet")
    data = (tmp_path / "src.parquet").read_bytes()
    result = _check(tmp_path, "t.parquet", data[: len(data) // 2])
    assert "unreadable_parquet" in _errors(result) and "truncated" in result.summary


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress(_lines(*[CHAT] * 2000).encode())
    result = _check(tmp_path, "t.jsonl.gz", data[: len(data) // 2])
    assert "broken_archive" in _errors(result)


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("t.csv", _lines(CHAT), "wrong_extension"),
    ("t.jsonl", "prompt,completion\na,b\n", "wrong_extension"),
    ("t.jsonl", "[" + json.dumps(CHAT) + "]", "wrong_extension"),
    ("t.parquet", _lines(CHAT), "wrong_extension"),
    ("t.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00", "wrong_extension"),
    ("t.pdf", _lines(CHAT), "unsupported_extension"),
])
def test_wrong_extension_is_refused_with_what_the_content_looks_like(tmp_path, name, content, kind):
    result = _check(tmp_path, name, content)
    assert kind in _errors(result) and ("looks like" in result.summary or "not a training file type" in result.summary)


def test_container_can_be_overridden(tmp_path):
    result = _check(tmp_path, "t.csv", _lines(CHAT), container="jsonl")
    assert result.ok and result.container == "jsonl"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\n" * 10_000, b"\xef\xbb\xbf\n"])
def test_empty_file_is_refused(tmp_path, content):
    result = _check(tmp_path, "t.jsonl", content)
    assert not result.ok and ("empty" in result.summary or "no rows" in result.summary)


@pytest.mark.parametrize("quoted", [False, True], ids=["one_line", "quoted_over_many_lines"])
def test_csv_with_a_100_mb_field_is_refused_with_default_limits_in_bounded_memory(tmp_path, quoted):
    import resource

    path = tmp_path / "big.csv"
    with open(path, "wb") as handle:  # 100 MB written a block at a time
        handle.write(b"prompt,completion\nfine,ok\n" + (b'"' if quoted else b""))
        block = (b"word " * 20 + b"\n") if quoted else b"x" * (1 << 20)
        for _ in range((100 << 20) // len(block)):
            handle.write(block)
        handle.write((b'"' if quoted else b"") + b",end\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = run_validation(ValidateConfig(path=str(path), filename="big.csv"))
    finally:
        path.unlink()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not result.ok and grown_mib < 150
    kind = "bad_csv" if quoted else "line_too_long"
    assert _errors(result)[kind]["examples"][0]["line"] >= 3
    assert ("16 MiB" if quoted else "32 MiB") in result.summary


def test_jsonl_saved_with_a_utf8_bom_is_read_like_csv_and_json_are(tmp_path):
    result = _check(tmp_path, "t.jsonl", b"\xef\xbb\xbf" + _lines(CHAT, CHAT).encode())
    assert result.ok and result.rows == 2, result.summary


def test_rows_after_more_blank_lines_than_the_sniffed_head_are_read(tmp_path):
    assert _check(tmp_path, "t.jsonl", "\n" * 10_000 + _lines(CHAT)).rows == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_refused_as_utf16_with_how_to_save_it(tmp_path, encoding):
    content = ("\ufeff" if encoding == "utf-16-be" else "") + _lines(CHAT)
    result = _check(tmp_path, "t.jsonl", content.encode(encoding))
    assert "utf16_text" in _errors(result) and "save it as UTF-8" in result.summary
