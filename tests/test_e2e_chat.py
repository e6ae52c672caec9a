"""Chat completions through the official openai client, a live server and a real inference worker."""

import json

import openai
import pytest

from models_app.services import fine_tuned_model_create
from tests.api import api_key_for
from tests.e2e import client_for
from tests.factories import make_job, make_user
from workers.sample_data import classification_rows, tool_call_row

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def tuned_model(live_base_model, trained_adapter):
    return fine_tuned_model_create(job=make_job(make_user(), status="succeeded"), adapter_dir=trained_adapter)


def test_greedy_reply_repeats_and_the_model_stays_loaded(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    first = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=12)
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-") and first.model == "tiny-llama"
    choice = first.choices[0]
    assert (choice.index, choice.message.role, choice.finish_reason) == (0, "assistant", "length")
    assert first.usage.completion_tokens == 12 and first.usage.prompt_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + 12

    again = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=QUESTION, temperature=0,
                                                              max_tokens=12)
    assert again.headers["x-model-cache"] == "hit"  # no reload between requests
    assert again.parse().choices[0].message.content == choice.message.content


def test_streamed_reply_equals_the_whole_one(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    whole = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_fine_tuned_model_answers_its_task_and_is_404_for_another_user(live_server, tuned_model, inference_worker):
    client, _ = client_for(live_server, tuned_model.owner)
    prompt, answer = classification_rows(24)[0]["messages"]
    raw = client.chat.completions.with_raw_response.create(model=tuned_model.id, messages=[prompt], temperature=0,
                                                           max_tokens=8)
    assert raw.headers["x-model-cache"] == "miss"  # the adapter was fetched and loaded for this request
    reply = raw.parse()
    assert reply.model == tuned_model.id
    assert (reply.choices[0].message.content.strip(), reply.choices[0].finish_reason) == (answer["content"], "stop")
    usage = client.get(f"/registry/models/{tuned_model.id}/usage", cast_to=object)  # counted by the worker
    assert (usage["requests"], usage["prompt_tokens"], usage["completion_tokens"]) == (
        1, reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert usage["latency_ms"]["p50"] > 0

    stranger, _ = client_for(live_server)
    with pytest.raises(openai.NotFoundError) as refused:
        stranger.chat.completions.create(model=tuned_model.id, messages=[prompt])
    assert (refused.value.code, refused.value.param) == ("model_not_found", "model")


def test_prompt_beyond_the_context_is_a_400(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hello " * 3000}])
    assert (refused.value.code, refused.value.param) == ("context_length_exceeded", "messages")
    assert "maximum context length is 2048 tokens" in refused.value.message


def test_no_inference_worker_is_a_503_naming_the_queue(live_server, live_base_model, inference_pool, settings):
    inference_pool.stop()
    settings.INFERENCE_TIMEOUT_SECONDS = 1
    client, _ = client_for(live_server)
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=QUESTION)
    assert refused.value.status_code == 503 and refused.value.code == "inference_unavailable"
    assert "`inference` queue" in refused.value.message


def test_web_server_streams_and_answers_whole_replies(web_server, live_base_model, inference_worker):
    """The production server sends a streamed reply piece by piece (ASGI), not at the end."""
    client = openai.OpenAI(base_url=web_server.url + "/v1", api_key=api_key_for(make_user()), max_retries=0)
    whole = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0,
                                                 max_tokens=16, stream=True))
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_rollback_moves_the_alias_and_chat_follows_it(live_server, live_base_model, trained_adapter,
                                                    untrained_adapter, inference_worker):
    from models_app.services import model_promote

    owner = make_user()
    versions = []
    for adapter in (trained_adapter, untrained_adapter):
        job = make_job(owner, status="succeeded")
        job.suffix = "topics"
        job.save(update_fields=["suffix"])
        versions.append(fine_tuned_model_create(job=job, adapter_dir=adapter))
        model_promote(model=versions[-1], alias="production")
    client, _ = client_for(live_server, owner)
    prompt, answer = classification_rows(24)[0]["messages"]

    def ask() -> tuple[str, str]:
        reply = client.chat.completions.create(model="topics@production", messages=[prompt], temperature=0,
                                               max_tokens=8)
        return reply.model, reply.choices[0].message.content.strip()

    assert ask()[0] == versions[1].id
    rolled = client.post("/registry/names/topics/rollback", body={"alias": "production"}, cast_to=object)
    assert rolled["aliases"] == {"production": versions[0].id}
    assert ask() == (versions[0].id, answer["content"])


def test_choices_logprobs_and_penalties_through_the_official_client(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    reply = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=1.2, seed=5, n=2,
                                           max_tokens=6, logprobs=True, top_logprobs=2, frequency_penalty=1,
                                           presence_penalty=0.5)
    assert [c.index for c in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert len(choice.logprobs.content) == 6 or choice.finish_reason == "stop"
        assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in choice.logprobs.content)
    assert reply.usage.completion_tokens == sum(len(c.logprobs.content) for c in reply.choices)

    chunks = list(client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=1.2, seed=5,
                                                 n=2, max_tokens=6, stream=True, logprobs=True))
    for choice in reply.choices:
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == choice.index]
        assert "".join(pieces) == choice.message.content  # the same seeds: the same choices


def test_json_object_reply_parses_and_json_schema_is_refused(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    for seed in (1, 2):  # the random model: anything it writes is held to one object
        reply = client.chat.completions.create(model="tiny-llama", messages=QUESTION, seed=seed, max_tokens=32,
                                               response_format={"type": "json_object"})
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
        assert reply.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=QUESTION, response_format={
            "type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}})
    assert refused.value.body["param"] == "response_format.type"


def test_tuned_model_calls_the_tool_it_learned_and_answers_its_result(live_server, live_base_model,
                                                                      tool_calling_model, inference_worker):
    model = fine_tuned_model_create(job=make_job(make_user(), status="succeeded", hyperparameters={"adapter": "full"}),
                                    adapter_dir=tool_calling_model)
    client, _ = client_for(live_server, model.owner)
    row = tool_call_row("Paris")
    reply = client.chat.completions.create(model=model.id, messages=row["messages"][:1], tools=row["tools"],
                                           tool_choice="auto", temperature=0, max_tokens=100)
    choice = reply.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})

    history = [*row["messages"][:1], choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    answer = client.chat.completions.create(model=model.id, messages=history, tools=row["tools"], temperature=0,
                                            max_tokens=20)
    assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == ("It is sunny in Paris.", "stop")
    assert answer.choices[0].message.tool_calls is None

    unoffered = client.chat.completions.create(model=model.id, messages=row["messages"][:1], tools=row["tools"],
                                               tool_choice="none", temperature=0, max_tokens=100)
    assert unoffered.choices[0].message.tool_calls is None  # tools neither offered nor read
    chunks = list(client.chat.completions.create(model=model.id, messages=row["messages"][:1], tools=row["tools"],
                                                 temperature=0, max_tokens=100, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert not any(d.content for d in deltas)  # the call's text is never streamed as content
    first, *pieces = [call for d in deltas for call in d.tool_calls or ()]
    # as OpenAI streams a call: its id, type and name with empty arguments, then the arguments piece by piece
    assert (first.index, first.id[:5], first.type, first.function.name, first.function.arguments) == (
        0, "call_", "function", "get_weather", "")
    assert len(pieces) > 1 and all(p.index == 0 and p.id is None and p.function.name is None for p in pieces)
    assert json.loads("".join(p.function.arguments for p in pieces)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # the official client's stream helper puts the pieces together into the call a whole reply has
    with client.chat.completions.stream(model=model.id, messages=row["messages"][:1], tools=row["tools"],
                                        temperature=0, max_tokens=100) as stream:
        for _event in stream:
            pass
        accumulated = stream.get_final_completion().choices[0]
    assert accumulated.finish_reason == "tool_calls" and not accumulated.message.content
    [whole] = accumulated.message.tool_calls
    assert (whole.function.name, whole.function.arguments) == (call.function.name, call.function.arguments)


def test_a_forced_call_through_the_official_client_streams_as_a_whole_reply_has_it(
        live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    tools = [*tool_call_row("Paris")["tools"], {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
    named = {"type": "function", "function": {"name": "get_time"}}
    whole = client.chat.completions.create(model="tiny-llama", messages=QUESTION, tools=tools, tool_choice=named,
                                           seed=3, max_tokens=24)
    [call] = whole.choices[0].message.tool_calls  # the untrained model calls it: the call is written for it
    assert whole.choices[0].finish_reason == "tool_calls" and call.function.name == "get_time"
    assert isinstance(json.loads(call.function.arguments), dict)
    with client.chat.completions.stream(model="tiny-llama", messages=QUESTION, tools=tools, tool_choice=named,
                                        seed=3, max_tokens=24) as stream:
        for _event in stream:
            pass
        streamed = stream.get_final_completion().choices[0]
    assert streamed.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in streamed.message.tool_calls] == [
        (call.function.name, call.function.arguments)]  # the same seed: the same call
    required = client.chat.completions.create(model="tiny-llama", messages=QUESTION, tools=tools,
                                              tool_choice="required", seed=4, max_tokens=24)
    assert required.choices[0].message.tool_calls[0].function.name in {"get_weather", "get_time"}


def test_stored_completions_through_the_official_client(live_server, live_base_model, inference_worker):
    client, _ = client_for(live_server)
    plain = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=4)
    kept = client.chat.completions.create(model="tiny-llama", messages=QUESTION, temperature=0, max_tokens=4,
                                          store=True, metadata={"app": "e2e"})
    listed = client.chat.completions.list(metadata={"app": "e2e"}, model="tiny-llama")
    assert [c.id for c in listed.data] == [kept.id] and plain.id != kept.id
    stored = client.chat.completions.retrieve(kept.id)
    assert stored.choices[0].message.content == kept.choices[0].message.content and stored.metadata == {"app": "e2e"}
    messages = client.chat.completions.messages.list(kept.id)
    assert [(m.role, m.content) for m in messages.data] == [("user", QUESTION[0]["content"])]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(plain.id)  # not stored: store is off by default
