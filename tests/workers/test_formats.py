import json

import pytest

from workers.formats import ALPACA, CHAT, PREFERENCE, PROMPT_COMPLETION, TEXT, format_detect, jsonl_rows

CHAT_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _write(tmp_path, text: str | bytes, name: str = "train.jsonl"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(("row", "fmt"), [
    (CHAT_ROW, CHAT),
    ({"instruction": "a", "output": "b"}, ALPACA),
    ({"prompt": "a", "completion": "b"}, PROMPT_COMPLETION),
    ({"text": "a"}, TEXT),
    ({"prompt": "a", "chosen": "b", "rejected": "c"}, PREFERENCE),
    ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, PREFERENCE),
    ({"question": "a"}, ""),
])
def test_format_detect_names_each_format(row, fmt):
    assert format_detect(row) == fmt


def test_rows_are_read_in_order_skipping_blank_lines(tmp_path):
    rows = [CHAT_ROW, {"prompt": "a", "completion": "b"}]
    path = _write(tmp_path, json.dumps(rows[0]) + "\n\n  \n" + json.dumps(rows[1]) + "\n")
    assert list(jsonl_rows(path)) == rows


def test_every_nth_row_is_an_even_sample(tmp_path):
    path = _write(tmp_path, "".join(json.dumps({"text": str(i)}) + "\n" + ("\n" if i % 3 else "") for i in range(10)))
    assert [row["text"] for row in jsonl_rows(path, every=4)] == ["0", "4", "8"]


def test_unparsed_rows_are_skipped_by_the_sample(tmp_path):
    path = _write(tmp_path, json.dumps({"text": "a"}) + "\nnot json\n" + json.dumps({"text": "c"}) + "\n")
    assert [row["text"] for row in jsonl_rows(path, every=2)] == ["a", "c"]


def test_invalid_json_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, json.dumps(CHAT_ROW) + "\n\n" + '{"messages": [\n')
    with pytest.raises(ValueError, match=r"train\.jsonl, line 3: invalid JSON"):
        list(jsonl_rows(path))


def test_invalid_utf8_names_the_line(tmp_path):
    path = _write(tmp_path, (json.dumps(CHAT_ROW) + "\n").encode() + b'{"prompt": "\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"line 2: not valid UTF-8"):
        list(jsonl_rows(path))


def test_a_line_that_is_not_an_object_is_refused(tmp_path):
    path = _write(tmp_path, "[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 1: each line must be a JSON object"):
        list(jsonl_rows(path))
