import json

from workers.data import CHAT, PROMPT_COMPLETION, jsonl_check


def _write(tmp_path, text: str | bytes, name: str = "data.jsonl"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _chat(user="hi", assistant="hello"):
    return json.dumps({"messages": [{"role": "user", "content": user},
                                    {"role": "assistant", "content": assistant}]})


def test_chat_file_is_recognised_and_counted(tmp_path):
    report = jsonl_check(_write(tmp_path, _chat() + "\n\n" + _chat() + "\n"))
    assert report.ok and report.format == CHAT and report.rows == 2


def test_prompt_completion_file_is_recognised(tmp_path):
    report = jsonl_check(_write(tmp_path, json.dumps({"prompt": "a", "completion": "b"}) + "\n"))
    assert report.ok and report.format == PROMPT_COMPLETION


def test_json_error_names_the_line(tmp_path):
    report = jsonl_check(_write(tmp_path, _chat() + "\n" + '{"messages": [\n'), "train.jsonl")
    assert not report.ok
    assert report.problems[0].line == 2
    assert "train.jsonl, line 2" in report.summary() and "invalid JSON" in report.summary()


def test_invalid_utf8_names_the_line(tmp_path):
    report = jsonl_check(_write(tmp_path, (_chat() + "\n").encode() + b'{"prompt": "\xff\xfe"}\n'))
    assert report.problems[0].line == 2 and "UTF-8" in report.problems[0].message


def test_chat_row_without_assistant_turn_is_rejected(tmp_path):
    row = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    report = jsonl_check(_write(tmp_path, _chat() + "\n" + row + "\n"))
    assert [(p.line, p.field) for p in report.problems] == [(2, "messages")]
    assert "no assistant turn" in report.problems[0].message


def test_unknown_role_names_the_field(tmp_path):
    row = json.dumps({"messages": [{"role": "bot", "content": "x"}]})
    report = jsonl_check(_write(tmp_path, row + "\n"))
    assert report.problems[0].field == "messages[0].role"


def test_mixed_formats_are_rejected(tmp_path):
    text = _chat() + "\n" + json.dumps({"prompt": "a", "completion": "b"}) + "\n"
    report = jsonl_check(_write(tmp_path, text))
    assert report.problems[0].line == 2 and "messages" in report.problems[0].message


def test_empty_completion_is_rejected(tmp_path):
    report = jsonl_check(_write(tmp_path, json.dumps({"prompt": "a", "completion": "  "}) + "\n"))
    assert report.problems[0].field == "completion"


def test_file_of_blank_lines_has_no_rows(tmp_path):
    report = jsonl_check(_write(tmp_path, "\n \n"))
    assert not report.ok and "no rows" in report.summary()


def test_problem_list_is_capped_but_counted(tmp_path):
    report = jsonl_check(_write(tmp_path, "nope\n" * 50))
    assert report.problem_count == 50 and len(report.problems) == 20
    assert "30 more problems" in report.summary()
