"""Reply channels over the real Redis channel layer: order, slow workers, readers that left."""

import asyncio

import pytest
from channels.layers import get_channel_layer

from models_app import replies
from models_app.replies import ReplyGone, ReplySender, replies_collect, reply_channel_new, reply_receive


def test_messages_arrive_in_order_up_to_the_end():
    channel = reply_channel_new()
    with ReplySender(channel, tag="7:left") as reply:
        reply.send("start", cache="miss", prompt_tokens=3)
        for piece in ("Par", "is", "!"):
            reply.send("delta", text=piece)
        reply.send("done", text="Paris!", finish_reason="stop", prompt_tokens=3, completion_tokens=4)
    messages = asyncio.run(replies_collect(channel, timeout=5))
    assert [m["type"] for m in messages] == ["inference.start", *["inference.delta"] * 3, "inference.done"]
    assert "".join(m["text"] for m in messages[1:4]) == "Paris!" and {m["tag"] for m in messages} == {"7:left"}


def test_a_worker_silent_for_longer_than_redis_reads_last_is_still_heard():
    """redis-py 8 reads time out after 5 s unless told otherwise; a slow model load takes longer."""
    channel = reply_channel_new()

    async def scenario():
        async def late():
            await asyncio.sleep(6)
            await get_channel_layer().send(channel, {"type": "inference.start", "tag": ""})

        sender = asyncio.create_task(late())
        message = await reply_receive(channel, timeout=20)
        await sender
        return message

    assert asyncio.run(scenario())["type"] == "inference.start"


def test_silence_past_the_timeout_is_a_timeout_error():
    with pytest.raises(TimeoutError):
        asyncio.run(reply_receive(reply_channel_new(), timeout=0.5))


def test_sender_gives_up_when_nobody_reads(monkeypatch):
    monkeypatch.setattr(replies, "FULL_GIVE_UP_SECONDS", 0.2)
    channel = reply_channel_new()
    with ReplySender(channel) as reply, pytest.raises(ReplyGone):
        for _ in range(get_channel_layer().capacity + 1):
            reply.send("delta", text="x")


@pytest.mark.django_db
def test_the_worker_says_it_loads_a_model_before_the_first_reply_and_not_after(live_base_model, monkeypatch):
    """The playground shows "Loading the model (first request)…" instead of a silent wait."""
    from models_app.services import inference

    monkeypatch.setattr(inference, "_inference_models", None)  # a fresh worker process: nothing loaded
    config = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}

    def kinds() -> list[str]:
        channel = reply_channel_new()
        inference.chat_completion_run(model_id="tiny-llama", config=config, reply_channel=channel, tag="1:left")
        return [m["type"] for m in asyncio.run(replies_collect(channel, timeout=5))]

    first, second = kinds(), kinds()
    assert first[:2] == ["inference.loading", "inference.start"] and first[-1] == "inference.done"
    assert second[0] == "inference.start"  # loaded now: no loading message


def test_pane_statuses_say_queued_loading_and_how_long_the_load_took():
    from models_app.playground import LOADING, Pane, pane_status_html, status_for

    assert status_for({"type": "inference.loading", "model": "m"}) == ("loading", LOADING)
    assert status_for({"type": "inference.start", "cache": "miss"}, loaded_in=14.23)[1] == \
        "Generating… (model loaded for this request in 14.2 s)"
    assert status_for({"type": "inference.start", "cache": "hit"})[1] == "Generating… (model already loaded)"
    html = pane_status_html(Pane("left", state="loading", status=LOADING))
    assert "Loading the model (first request)… <span class=\"elapsed\" data-elapsed>0 s</span>" in html
    assert "data-elapsed" not in pane_status_html(Pane("left", state="generating", status="Generating…"))


@pytest.mark.django_db
def test_the_worker_answers_with_a_checkpoints_weights_named_as_openai_names_it(live_base_model, trained_adapter,
                                                                                monkeypatch, tmp_path, settings):
    import json
    import shutil

    from finetune_site.files import storage_put_dir
    from jobs_app.models import Checkpoint
    from models_app.selectors import model_public_id
    from models_app.services import inference
    from tests.factories import make_job

    settings.WORK_DIR = str(tmp_path / "work")
    monkeypatch.setattr(inference, "_inference_models", None)
    job = make_job()
    directory = shutil.copytree(trained_adapter, tmp_path / "checkpoint-2")
    (directory / "optimizer.pt").write_bytes(b"not needed to answer")
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    (directory / "manifest.json").write_text(json.dumps({"step": 2, "files": files}))
    prefix = f"jobs/{job.id}/checkpoints/step-2"
    storage_put_dir(directory, prefix, last="manifest.json")
    checkpoint = Checkpoint.objects.create(job=job, step=2, storage_path=prefix)

    channel = reply_channel_new()
    config = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
    inference.chat_completion_run(model_id=model_public_id(checkpoint), config=config, reply_channel=channel)
    messages = asyncio.run(replies_collect(channel, timeout=5))
    assert messages[-1]["type"] == "inference.done", messages[-1]
    fetched = tmp_path / "work" / "inference" / checkpoint.id
    assert (fetched / "adapter_config.json").exists() and not (fetched / "optimizer.pt").exists()


@pytest.mark.django_db
def test_the_worker_generates_n_choices_each_streamed_under_its_index(live_base_model):
    from models_app.services import inference

    config = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 1.5, "seed": 3,
              "n": 3, "logprobs": True}
    channel = reply_channel_new()
    inference.chat_completion_run(model_id="tiny-llama", config=config, reply_channel=channel)
    messages = asyncio.run(replies_collect(channel, timeout=10))
    done = messages[-1]
    assert done["type"] == "inference.done" and len(done["choices"]) == 3
    for index, choice in enumerate(done["choices"]):
        streamed = "".join(m["text"] for m in messages if m["type"] == "inference.delta" and m["index"] == index)
        assert streamed == choice["text"] and len(choice["logprobs"]) == choice["completion_tokens"]
    assert done["completion_tokens"] == sum(c["completion_tokens"] for c in done["choices"])
    assert len({c["text"] for c in done["choices"]}) > 1  # each choice its own seed
    assert [m["type"] for m in messages].count("inference.start") == 1
