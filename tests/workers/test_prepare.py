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
                               "rows_changed": 0, "version": 1}]
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


def test_clean_repairs_mojibake_normalises_and_tidies_every_text_of_a_row(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "The Mona Lisa doesn\u00e2\u20ac\u2122t  have\x07 eyebrows?\r\n"},
                          {"role": "assistant", "content": "\ufb01ne \u338f, caf\u0065\u0301\n\n\n\nyes\u00a0 "}]},
            {"messages": [{"role": "user", "content": "clean already"}, {"role": "assistant", "content": "yes"}]}]
    nfkc = _prepare(tmp_path, rows, [{"op": "clean", "unicode": "nfkc"}], fmt="chat")
    first, second = _read(nfkc.files["train"])
    assert first["messages"] == [{"role": "user", "content": "The Mona Lisa doesn\u2019t have eyebrows?"},
                                 {"role": "assistant", "content": "fine kg, caf\u00e9\n\nyes"}]
    assert second == rows[1]
    assert nfkc.applied == [{"op": "clean", "unicode": "nfkc", "control_chars": True, "whitespace": True,
                             "mojibake": True, "version": 1, "rows_removed": 0, "rows_changed": 1}]
    nfc = _read(_prepare(tmp_path, rows, [{"op": "clean", "whitespace": False, "mojibake": False}],
                         fmt="chat").files["train"])[0]
    # NFC composes the accent but keeps the ligature and the unit; spaces and the mojibake stay
    assert nfc["messages"][1]["content"] == "\ufb01ne \u338f, caf\u00e9\n\n\n\nyes\u00a0 "
    assert nfc["messages"][0]["content"] == "The Mona Lisa doesn\u00e2\u20ac\u2122t  have eyebrows?\r\n"


def _chunk_setup(tmp_path, tiny_model_path, rows, max_tokens, overlap):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    source = _write(tmp_path / "parent.jsonl", rows)
    operation = {"op": "chunk", "model": "tiny", "max_tokens": max_tokens, "overlap_tokens": overlap}
    result = run_prepare(PrepareConfig(path=source, format="text", output_dir=str(tmp_path / f"out{overlap}"),
                                       operations=(operation,), tokenizers=(("tiny", str(tiny_model_path)),)))
    return result, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


SENTENCES = [f"Sentence number {n} talks about topic {n * 7} at some length." for n in range(40)]


def test_chunk_cuts_long_documents_by_the_tokenizer_on_sentence_boundaries_with_overlap(tmp_path, tiny_model_path):
    document = " ".join(SENTENCES)
    rows = [{"text": document, "source": "book"}, {"text": "A short note.", "source": "note"}]
    # the tiny tokenizer spends about 36 tokens on a sentence: three fit in a chunk, one in the overlap
    result, count = _chunk_setup(tmp_path, tiny_model_path, rows, max_tokens=120, overlap=40)
    chunks = _read(result.files["train"])
    book = [row for row in chunks if row["source"] == "book"]
    assert chunks[-1] == rows[1]  # a row that fits stays whole
    assert len(book) > 3 and all(count(row["text"]) <= 120 for row in book)
    for row in book:  # every chunk is whole sentences of the document, in order
        sentences = row["text"].split(" Sentence")
        assert row["text"] in document and row["text"].startswith("Sentence") and row["text"].endswith(".")
        assert len(sentences) >= 2
    for before, after in zip(book, book[1:], strict=False):  # each starts with the last sentence(s) of the one before
        shared = after["text"][: after["text"].index(".") + 1]
        assert before["text"].endswith(shared) and count(shared) <= 40
    # together the chunks hold every sentence, and without overlap each exactly once
    assert all(any(s in row["text"] for row in book) for s in SENTENCES)
    plain, _ = _chunk_setup(tmp_path, tiny_model_path, rows, max_tokens=120, overlap=0)
    pieces = [row["text"] for row in _read(plain.files["train"]) if row["source"] == "book"]
    assert " ".join(pieces) == document
    assert result.applied[0]["rows_changed"] == 1 and result.applied[0]["rows_added"] == len(book) - 1
    assert result.rows == {"train": len(book) + 1}


def test_chunk_cuts_a_sentence_longer_than_a_chunk_between_words(tmp_path, tiny_model_path):
    long_sentence = " ".join(f"word{n}" for n in range(200)) + "."
    result, count = _chunk_setup(tmp_path, tiny_model_path, [{"text": f"Intro here. {long_sentence} The end."}],
                                 max_tokens=32, overlap=0)
    chunks = [row["text"] for row in _read(result.files["train"])]
    assert all(count(text) <= 32 for text in chunks)
    assert " ".join(chunks) == f"Intro here. {long_sentence} The end."


@pytest.mark.parametrize(("operation", "fmt", "param"), [
    ({"op": "chunk", "max_tokens": 64}, "text", "operations[0].model"),
    ({"op": "chunk", "model": "m", "max_tokens": 64}, "chat", "operations[0].op"),
    ({"op": "chunk", "model": "m", "max_tokens": 64, "overlap_tokens": 64}, "text", "operations[0].overlap_tokens"),
    ({"op": "clean", "unicode": "nfd"}, "chat", "operations[0].unicode"),
    ({"op": "language", "keep": ["xx"]}, "chat", "operations[0].keep"),
    ({"op": "quality", "min_score": 2}, "chat", "operations[0].min_score"),
])
def test_bad_new_operations_name_their_param(operation, fmt, param):
    with pytest.raises(PrepareError) as error:
        operations_check([operation], fmt)
    assert error.value.param == param


def test_language_keeps_the_chosen_languages_and_counts_what_it_saw(tmp_path):
    rows = [{"prompt": "What is the weather like in London today?", "completion": "It is raining, as usual."},
            {"prompt": "Wie ist das Wetter heute in Berlin?", "completion": "Es regnet, wie immer im Herbst."},
            {"prompt": "Quel temps fait-il aujourd'hui à Paris ?", "completion": "Il pleut, comme toujours."}]
    result = _prepare(tmp_path, rows, [{"op": "language", "keep": ["en", "fr"]}])
    assert _read(result.files["train"]) == [rows[0], rows[2]]
    assert result.applied[0]["languages"] == {"en": 1, "de": 1, "fr": 1} and result.applied[0]["rows_removed"] == 1


def test_quality_scores_every_row_and_drops_those_below_the_threshold(tmp_path):
    good = {"prompt": "How do plants make their food?",
            "completion": "Plants use sunlight, water and carbon dioxide to make sugar through photosynthesis."}
    rows = [good, {"prompt": "spam", "completion": "buy now buy now buy now buy now buy now buy now buy now"},
            {"prompt": "numbers", "completion": "1234 5678 9012 3456 7890 ### $$$ %%%"},
            {"prompt": "empty answer", "completion": "  "}]
    result = _prepare(tmp_path, rows, [{"op": "quality", "min_score": 0.6}])
    assert _read(result.files["train"]) == [good]
    applied = result.applied[0]
    assert applied["rows_removed"] == 3 and sum(applied["score_histogram"]) == 4
    assert applied["score_histogram"][9] == 1 and applied["score_histogram"][0] >= 1 and 0 < applied["mean_score"] < 1
