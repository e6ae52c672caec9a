"""Token statistics and template rendering with the tiny model's tokenizer."""

import json

import pytest

from workers.sample_data import tool_call_row
from workers.stats import StatsConfig, histogram, length_summary, script_of, token_lengths
from workers.templates import TEMPLATE_NAMES, TemplateError, render, tokenizer_prepare


@pytest.fixture(scope="module")
def loaded_tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture
def tokenizer(loaded_tokenizer):
    """The module's tokenizer with the model's own chat template back, whatever a test set before."""
    own = loaded_tokenizer.chat_template
    yield loaded_tokenizer
    loaded_tokenizer.chat_template = own


CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Classify: rain"},
                     {"role": "assistant", "content": "weather"}]}


@pytest.mark.parametrize("template", [t for t in TEMPLATE_NAMES])
def test_every_template_puts_loss_on_the_answer_only(tokenizer, template):
    tokenizer_prepare(tokenizer, template)
    rendered = render(tokenizer, CHAT, "chat", template=template, max_length=4096)
    marked = tokenizer.decode([t for t, m in zip(rendered.ids, rendered.loss_mask, strict=True) if m])
    unmarked = tokenizer.decode([t for t, m in zip(rendered.ids, rendered.loss_mask, strict=True) if not m])
    assert "weather" in marked and "Classify" in unmarked and "Classify" not in marked


@pytest.mark.parametrize("template", [t for t in TEMPLATE_NAMES])
def test_every_template_writes_tool_calls_and_puts_loss_on_them(tokenizer, template):

    tokenizer_prepare(tokenizer, template)
    rendered = render(tokenizer, tool_call_row("Oslo"), "chat", template=template, max_length=4096)
    marked = tokenizer.decode([t for t, m in zip(rendered.ids, rendered.loss_mask, strict=True) if m])
    assert "get_weather" in marked and '"city": "Oslo"' in marked and "It is sunny in Oslo." in marked
    assert "sunny\n" not in marked and "What is the weather" not in marked  # the tool's answer is read


def test_template_that_ignores_tool_calls_is_refused(tokenizer):
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
                               "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}"
                               "{% endfor %}")
    with pytest.raises(TemplateError, match="tool calls"):
        render(tokenizer, tool_call_row(), "chat", template="", max_length=100)


def test_prompt_completion_and_text_loss(tokenizer):
    tokenizer_prepare(tokenizer, "")
    pair = render(tokenizer, {"prompt": "Classify: rain", "completion": " weather"}, "prompt_completion",
                  template="", max_length=100)
    assert pair.loss_mask[0] == 0 and pair.loss_mask[-1] == 1 and pair.target_tokens < pair.total_tokens
    text = render(tokenizer, {"text": "plain words"}, "text", template="", max_length=100)
    assert text.target_tokens == text.total_tokens


def test_truncation_can_leave_nothing_to_learn(tokenizer):
    tokenizer_prepare(tokenizer, "")
    row = {"prompt": "word " * 50, "completion": " end"}
    rendered = render(tokenizer, row, "prompt_completion", template="", max_length=10)
    assert rendered.truncated and rendered.trainable == 0


def test_template_without_generation_marks_is_refused(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(TemplateError, match="generation"):
        render(tokenizer, CHAT, "chat", template="", max_length=100)


def test_lengths_summary_and_structure(tmp_path, tiny_model_path):
    rows = [CHAT] * 9 + [{"messages": [{"role": "user", "content": "Привет " * 300},
                                       {"role": "assistant", "content": "hi"}]}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = token_lengths(StatsConfig(path=str(path), format="chat", tokenizer_path=str(tiny_model_path)))
    assert lengths.rows == 10 and not lengths.sampled
    assert lengths.structure["roles"] == {"system": 9, "user": 10, "assistant": 10}
    assert lengths.structure["turns"] == {"1": 10} and lengths.structure["scripts"] == {"ascii": 9, "cyrillic": 1}
    summary = length_summary(lengths, max_length=64)
    assert summary["truncated_rows"] == 1 and summary["truncated_share"] == 0.1
    assert summary["rows_without_trainable_tokens"] == 1 and summary["target_tokens_lost"] > 0
    assert summary["suggested_max_length"] >= max(lengths.totals) and summary["suggested_max_length"] % 64 == 0
    assert sum(b["count"] for b in summary["histogram"]["prompt"]) == 10


def test_sampling_spreads_over_the_file(tmp_path, tiny_model_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(100)))
    lengths = token_lengths(StatsConfig(path=str(path), format="text", tokenizer_path=str(tiny_model_path),
                                        max_rows=10, total_rows=100))
    assert lengths.rows == 10 and lengths.sampled


def test_histogram_bins_fit_the_range_of_the_data():
    bins = histogram([20, 22, 25, 31, 33, 40])  # short rows: bins of 5 tokens from 20, not one bin of 0-63
    assert [(b["from"], b["to"], b["count"]) for b in bins] == [
        (20, 25, 2), (25, 30, 1), (30, 35, 2), (35, 40, 0), (40, 45, 1)]
    assert histogram([5] * 10) == [{"from": 5, "to": 6, "count": 10}]  # all alike: one bin
    assert histogram([]) == []
    spread = histogram(list(range(100, 301)))
    assert spread[0]["count"] and spread[-1]["count"] and 5 <= len(spread) <= 11  # no empty bin at either end
    assert {b["to"] - b["from"] for b in spread} == {20}


def test_histogram_folds_a_long_tail_into_an_open_last_bin():
    values = [100 + i % 200 for i in range(500)] + [30000]
    bins = histogram(values)
    assert bins[-1]["to"] is None and bins[-1]["count"] >= 1 and bins[-2]["to"] < 1000
    assert sum(b["count"] for b in bins) == len(values) and len(bins) <= 12


def test_scripts():
    assert (script_of("hello"), script_of("café"), script_of("東京"), script_of("مرحبا")) == (
        "ascii", "latin", "cjk", "arabic")
