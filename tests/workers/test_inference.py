"""Chat generation on the tiny local model, on CPU, without Django."""

import json

import pytest

from workers.inference import (
    ContextLengthExceeded,
    GenerateConfig,
    ModelCache,
    ToolCallStream,
    generate,
    inference_model_load,
    prompt_ids,
    token_bytes,
    tool_calls_parse,
)
from workers.sample_data import tool_call_row

HELLO = ({"role": "user", "content": "What is the capital of France?"},)


@pytest.fixture(scope="module")
def base(tiny_model_path):
    return inference_model_load(str(tiny_model_path))


@pytest.fixture(scope="module")
def tuned(tiny_model_path, trained_adapter):
    return inference_model_load(str(tiny_model_path), str(trained_adapter))


def test_greedy_reply_is_deterministic_and_streams_the_same_text(base):
    config = GenerateConfig(messages=HELLO, temperature=0, max_tokens=24)
    deltas = []
    first = generate(base, config, deltas.append)
    second = generate(base, config)
    assert first == second
    assert len(deltas) > 1 and "".join(deltas) == first.text
    assert (first.finish_reason, first.completion_tokens) == ("length", 24)
    assert first.prompt_tokens == len(prompt_ids(base.tokenizer, HELLO))


def test_seeded_sampling_repeats_and_other_seeds_differ(base):
    def sample(seed):
        config = GenerateConfig(messages=HELLO, temperature=1.5, top_p=0.95, seed=seed, max_tokens=16)
        return generate(base, config).text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_max_tokens_is_respected(base):
    for limit in (1, 5):
        result = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=limit))
        assert result.completion_tokens == limit and result.finish_reason == "length"


def test_tuned_model_answers_the_task_and_stops_at_end_of_turn(tuned):
    from workers.sample_data import classification_rows

    row = classification_rows(24)[0]["messages"]
    result = generate(tuned, GenerateConfig(messages=(row[0],), temperature=0, max_tokens=16))
    assert (result.text.strip(), result.finish_reason) == (row[1]["content"], "stop")
    assert result.completion_tokens < 16


def test_stop_string_ends_the_reply_before_it_and_is_never_streamed(base):
    full = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=32)).text
    stop = full[10:12]
    deltas = []
    result = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=32, stop=(stop,)), deltas.append)
    assert result.finish_reason == "stop" and result.text == full[:full.index(stop)]
    assert "".join(deltas) == result.text


def test_multibyte_characters_are_streamed_whole(base):
    from workers.inference import _TextStream

    tokenizer = base.tokenizer
    target = tokenizer("déjà vu 日本", add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tokenizer.decode([t]) for t in target)  # byte tokens: characters span tokens
    deltas = []
    stream = _TextStream(tokenizer, (), deltas.append)
    for token in target:
        stream.add(token)
    stream.finish()
    assert "".join(deltas) == "déjà vu 日本"
    assert all("\ufffd" not in d for d in deltas)


def test_prompt_longer_than_the_context_is_refused_before_generating(base):
    long = ({"role": "user", "content": "hello world " * 2000},)
    started = []
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 2048 tokens"):
        generate(base, GenerateConfig(messages=long, max_tokens=8), on_start=started.append)
    assert started == []


def test_config_rejects_bad_values():
    for bad in ({"temperature": 3}, {"top_p": 0}, {"max_tokens": 0}, {"stop": ("a", "b", "c", "d", "e")},
                {"presence_penalty": 2.5}, {"frequency_penalty": -3}, {"top_logprobs": 2},
                {"logprobs": True, "top_logprobs": 21}):
        with pytest.raises(ValueError):
            GenerateConfig(messages=HELLO, **bad)
    with pytest.raises(ValueError, match="role"):
        GenerateConfig(messages=({"role": "robot", "content": "hi"},))


def test_cache_returns_the_loaded_model_and_drops_the_least_recently_used():
    loads = []

    def loader(base, adapter):
        loads.append((base, adapter))
        return object()

    cache = ModelCache(size=2, loader=loader)
    first, hit = cache.get("base", None)
    assert not hit
    assert cache.get("base") == (first, True)
    cache.get("base", "adapter-a")
    cache.get("base")  # most recently used now
    cache.get("base", "adapter-b")  # drops adapter-a
    assert len(cache) == 2 and cache.get("base")[1] and not cache.get("base", "adapter-a")[1]
    assert loads == [("base", None), ("base", "adapter-a"), ("base", "adapter-b"), ("base", "adapter-a")]


def test_penalties_lower_the_logits_of_tokens_already_in_the_reply_by_openais_formula():
    import torch

    from workers.inference import _penalised

    config = GenerateConfig(messages=HELLO, presence_penalty=0.5, frequency_penalty=1.0)
    logits = _penalised(torch.zeros(8), {3: 2, 5: 1}, config)
    assert logits.tolist() == [0, 0, 0, -2.5, 0, -1.5, 0, 0]


def test_a_strong_frequency_penalty_changes_a_repetitive_greedy_reply(base):
    plain = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=24))
    penalised = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=24, frequency_penalty=2,
                                              presence_penalty=2))
    assert penalised.text != plain.text


def test_logprob_bytes_of_a_split_character_are_the_tokens_own_bytes(base):
    text = "naïve 😀"
    ids = base.tokenizer.encode(text, add_special_tokens=False)
    assert any("\ufffd" in base.tokenizer.decode([i]) for i in ids)  # some token holds part of a character
    assert b"".join(token_bytes(base.tokenizer, i) for i in ids) == text.encode()


def test_logprobs_come_for_every_token_with_the_most_likely_ones(base):
    result = generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=6, logprobs=True,
                                           top_logprobs=3))
    assert len(result.logprobs) == result.completion_tokens == 6
    for entry in result.logprobs:
        assert entry["logprob"] <= 0 and entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]  # greedy: the chosen one is the top one
    assert "".join(e["token"] for e in result.logprobs).strip() == result.text.strip()
    assert generate(base, GenerateConfig(messages=HELLO, temperature=0, max_tokens=2)).logprobs is None


def test_tool_calls_come_out_of_the_reply_and_a_malformed_block_stays_text():
    text = ('Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}</tool_call>'
            '<tool_call>{"name": "now"}</tool_call>')
    rest, calls = tool_calls_parse(text)
    assert rest == "Let me look."
    assert [(c["type"], c["function"]) for c in calls] == [
        ("function", {"name": "get_weather", "arguments": '{"city": "Lyon"}'}), ("function", {"name": "now",
                                                                                              "arguments": "{}"})]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    for broken in ('<tool_call>{"name": "f", "arguments": {"a": </tool_call>',
                   '<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
                   '<tool_call>{"name": "f"'):
        assert tool_calls_parse(broken) == (broken, [])


def _streamed(text: str, size: int) -> tuple[ToolCallStream, list[str], list[dict]]:
    texts, deltas = [], []
    stream = ToolCallStream(texts.append, deltas.append)
    for start in range(0, len(text), size):
        stream.feed(text[start:start + size])
    stream.finish()
    return stream, texts, deltas


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_a_streamed_reply_sends_each_call_as_openai_does_and_adds_up_to_the_whole_reply(size):
    text = ('Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Lyon", "days": [1, 2]}}'
            '</tool_call><tool_call>{"arguments": {}, "name": "now"}</tool_call><tool_call>nonsense</tool_call>')
    stream, texts, deltas = _streamed(text, size)
    assert "".join(texts) == stream.text == "Let me look.<tool_call>nonsense</tool_call>"
    starts = [d for d in deltas if "id" in d]
    assert [(d["index"], d["type"], d["function"]) for d in starts] == [
        (0, "function", {"name": "get_weather", "arguments": ""}), (1, "function", {"name": "now", "arguments": ""})]
    pieces = [d["function"]["arguments"] for d in deltas if "id" not in d and d["index"] == 0]
    assert (len(pieces) > 1) == (size < 20) and "".join(pieces) == '{"city": "Lyon", "days": [1, 2]}'
    assert [c["function"]["arguments"] for c in stream.calls] == ['{"city": "Lyon", "days": [1, 2]}', "{}"]
    assert [c["id"] for c in stream.calls] == [d["id"] for d in starts] and stream.complete


def test_a_call_cut_off_keeps_its_arguments_and_is_not_complete():
    stream, texts, deltas = _streamed('<tool_call>{"name": "f", "arguments": {"a": "b', 3)
    assert stream.calls[0]["function"] == {"name": "f", "arguments": '{"a": "b'} and not stream.complete
    assert texts == [] and "".join(d["function"]["arguments"] for d in deltas) == '{"a": "b'


TWO_TOOLS = [*tool_call_row()["tools"], {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize(("choice", "names"), [
    ("required", {"get_weather", "get_time"}),
    ({"type": "function", "function": {"name": "get_time"}}, {"get_time"}),
])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_forced_call_names_an_offered_tool_with_json_arguments_even_from_the_untrained_model(
        base, choice, names, seed):
    deltas = []
    result = generate(base, GenerateConfig(messages=HELLO, tools=TWO_TOOLS, tool_choice=choice, seed=seed,
                                           temperature=1.0, max_tokens=24), on_call=deltas.append)
    assert result.finish_reason == "tool_calls" and result.text == ""
    [call] = result.tool_calls
    assert call["function"]["name"] in names and isinstance(json.loads(call["function"]["arguments"]), dict)
    assert deltas[0]["function"] == {"name": call["function"]["name"], "arguments": ""}
    assert "".join(d["function"]["arguments"] for d in deltas[1:]) == call["function"]["arguments"]


def test_tool_choice_naming_no_offered_tool_is_refused():
    with pytest.raises(ValueError, match="tool_choice"):
        GenerateConfig(messages=HELLO, tools=TWO_TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
    with pytest.raises(ValueError, match="tool_choice"):
        GenerateConfig(messages=HELLO, tool_choice="required")


def test_the_prompt_offers_the_tools_exactly_as_training_renders_them(base):
    from workers.templates import chat_tokens

    row = tool_call_row("Lyon")
    trained, _mask = chat_tokens(base.tokenizer, row)
    for turns in (1, 3):  # the question; then the call and the tool's answer (a follow-up)
        prompt = prompt_ids(base.tokenizer, row["messages"][:turns], row["tools"])
        assert trained[:len(prompt)] == prompt
        assert base.tokenizer.decode(prompt).endswith("<|assistant|>\n")
    assert "get_weather" in base.tokenizer.decode(prompt_ids(base.tokenizer, row["messages"][:1], row["tools"]))


def test_a_template_that_cannot_write_tools_is_refused(base):
    from workers.inference import TemplateCannotWrite

    base.tokenizer.chat_template, template = "{% for m in messages %}{{ m.content }}{% endfor %}", \
        base.tokenizer.chat_template
    try:
        with pytest.raises(TemplateCannotWrite) as refused:
            generate(base, GenerateConfig(messages=HELLO, tools=tool_call_row()["tools"], max_tokens=2))
        assert refused.value.param == "tools"
    finally:
        base.tokenizer.chat_template = template


def test_model_that_learned_a_tool_calls_it_and_answers_the_tools_result(tiny_model_path, tool_calling_model):
    model = inference_model_load(str(tiny_model_path), str(tool_calling_model))
    row = tool_call_row("Paris")
    asked = generate(model, GenerateConfig(messages=row["messages"][:1], tools=row["tools"], temperature=0,
                                           max_tokens=100))
    assert (asked.text, asked.finish_reason) == ("", "tool_calls")
    [call] = asked.tool_calls
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    answered = generate(model, GenerateConfig(messages=row["messages"][:3], tools=row["tools"], temperature=0,
                                              max_tokens=20))
    assert (answered.text, answered.finish_reason, answered.tool_calls) == ("It is sunny in Paris.", "stop", None)
    plain = generate(model, GenerateConfig(messages=row["messages"][:1], temperature=0, max_tokens=100))
    assert plain.tool_calls is None  # no tools offered: nothing is read as a call


@pytest.mark.parametrize("settings", [{"temperature": 0, "max_tokens": 48}, {"temperature": 0, "max_tokens": 3},
                                      {"temperature": 1.5, "seed": 2, "max_tokens": 40},
                                      {"temperature": 1, "seed": 1, "top_p": 0.9, "max_tokens": 64}])
def test_json_object_replies_are_one_json_object_even_from_a_random_model(base, settings):
    import json

    result = generate(base, GenerateConfig(messages=HELLO, response_format="json_object", **settings))
    assert isinstance(json.loads(result.text), dict), result.text
    assert result.finish_reason == "stop" and result.completion_tokens <= settings["max_tokens"]
