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
