"""Preparation: every operation, in order, streaming; the parent file is only read."""

import json

import pytest

from workers.prepare import PrepareConfig, PrepareError, convert, operations_check, run_prepare

LONG = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _read(path):
    return [json.loads(line) for line in open(path)]


def _prepare(tmp_path, rows, operations, fmt="prompt_completion"):
    source = _write(tmp_path / "parent.jsonl", rows)
    before = open(source).read()
    result = run_prepare(PrepareConfig(path=source, format=fmt, output_dir=str(tmp_path / "out"),
                                       operations=tuple(operations)))
    assert open(source).read() == before
    return result


def test_dedup_exact_and_near(tmp_path):
    rows = [{"prompt": LONG, "completion": "a"}, {"prompt": LONG, "completion": "a"},
            {"prompt": LONG + " seventeen", "completion": "a"}, {"prompt": "other", "completion": "b"}]
    exact = _prepare(tmp_path, rows, [{"op": "dedup"}])
    assert exact.rows == {"train": 3} and exact.applied[0]["rows_removed"] == 1
    near = _prepare(tmp_path, rows, [{"op": "dedup", "near": True, "near_threshold": 0.6}])
    assert _read(near.files["train"]) == [rows[0], rows[3]]


def test_mask_filter_and_convert(tmp_path):
    rows = [{"prompt": "mail ann@example.com", "completion": "ok"}, {"prompt": "x" * 500, "completion": "long"}]
    result = _prepare(tmp_path, rows, [{"op": "mask_pii"}, {"op": "filter_length", "max_chars": 100},
                                       {"op": "convert", "to": "chat"}])
    assert result.format == "chat"
    assert _read(result.files["train"]) == [{"messages": [{"role": "user", "content": "mail [EMAIL]"},
                                                          {"role": "assistant", "content": "ok"}]}]
    assert [(a["op"], a["rows_removed"], a["rows_changed"]) for a in result.applied] == [
        ("mask_pii", 0, 1), ("filter_length", 1, 0), ("convert", 0, 1)]
    assert result.applied[0]["pieces_masked"] == 1


def test_map_columns_changes_the_format(tmp_path):
    result = _prepare(tmp_path, [{"text": "hello"}], [{"op": "map_columns", "column_map": {"text": "prompt"}}],
                      fmt="text")
    assert _read(result.files["train"]) == [{"prompt": "hello"}]


def test_split_is_seeded_and_stratified_by_source(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": "c", "source": "a" if i < 80 else "b"} for i in range(100)]
    first = _prepare(tmp_path, rows, [{"op": "split", "validation_share": 0.25, "seed": 7}])
    validation = _read(first.files["validation"])
    assert first.rows == {"train": 75, "validation": 25}
    assert sum(r["source"] == "a" for r in validation) == 20 and sum(r["source"] == "b" for r in validation) == 5
    again = _prepare(tmp_path, rows, [{"op": "split", "validation_share": 0.25, "seed": 7}])
    assert _read(again.files["validation"]) == validation
    other = _prepare(tmp_path, rows, [{"op": "split", "validation_share": 0.25, "seed": 8}])
    assert _read(other.files["validation"]) != validation


def test_conversions():
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert convert(chat, "chat", "prompt_completion") == {"prompt": "q", "completion": "a"}
    assert convert(chat, "chat", "text") == {"text": "q\na"}
    assert convert({"prompt": "q", "completion": "a"}, "prompt_completion", "chat") == chat
    multi = {"messages": chat["messages"] * 2}
    assert convert(multi, "chat", "prompt_completion") is None


@pytest.mark.parametrize(("operations", "param"), [
    ([{"op": "nope"}], "operations[0].op"),
    ([{"op": "convert", "to": "xml"}], "operations[0].to"),
    ([{"op": "split"}, {"op": "dedup"}], "operations[0].op"),
    ([{"op": "split", "validation_share": 1.5}], "operations[0].validation_share"),
    ([{"op": "mask_pii", "kinds": ["ssn"]}], "operations[0].kinds"),
    ([{"op": "filter_length", "max_chars": -1}], "operations[0].max_chars"),
    ("dedup", "operations"),
])
def test_bad_operations_name_their_param(operations, param):
    with pytest.raises(PrepareError) as error:
        operations_check(operations, "chat")
    assert error.value.param == param


def test_filter_length_in_tokens_counts_rows_as_the_trainer_renders_them(tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    from workers.templates import render, tokenizer_prepare

    # short in characters but long in tokens (bytes of a script the tokenizer never saw), and the reverse
    rows = [{"prompt": "ж" * 30, "completion": "ok"}, {"prompt": "the answer " * 12, "completion": "ok"},
            {"prompt": "hello", "completion": "world"}]
    chat = [convert(row, "prompt_completion", "chat") for row in rows]
    tokenizer = tokenizer_prepare(AutoTokenizer.from_pretrained(tiny_model_path), "chatml")
    counts = [render(tokenizer, row, "chat", template="chatml", max_length=1 << 30).total_tokens for row in chat]
    assert counts[0] > counts[1] > counts[2] and len(chat[0]["messages"][0]["content"]) < len(rows[1]["prompt"])
    operation = {"op": "filter_length", "max_tokens": counts[1], "model": "tiny", "template": "chatml"}
    source = _write(tmp_path / "parent.jsonl", chat)
    result = run_prepare(PrepareConfig(path=source, format="chat", output_dir=str(tmp_path / "out"),
                                       operations=(operation,), tokenizers=(("tiny", str(tiny_model_path)),)))
    assert _read(result.files["train"]) == chat[1:]
    assert result.applied == [{**operation, "min_chars": 0, "max_chars": None, "min_tokens": 0, "rows_removed": 1,
                               "rows_changed": 0}]
    fewest = run_prepare(PrepareConfig(path=source, format="chat", output_dir=str(tmp_path / "out2"),
                                       operations=({**operation, "max_tokens": None, "min_tokens": counts[1]},),
                                       tokenizers=(("tiny", str(tiny_model_path)),)))
    assert _read(fewest.files["train"]) == chat[:2]


@pytest.mark.parametrize(("operation", "param"), [
    ({"op": "filter_length", "max_tokens": 10}, "operations[0].model"),
    ({"op": "filter_length", "max_tokens": -1, "model": "m"}, "operations[0].max_tokens"),
    ({"op": "filter_length", "max_tokens": 10, "model": "m", "template": "vicuna"}, "operations[0].template"),
])
def test_bad_token_filter_names_its_param(operation, param):
    with pytest.raises(PrepareError) as error:
        operations_check([operation], "chat")
    assert error.value.param == param
