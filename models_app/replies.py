"""What an inference worker sends back while it generates, and how web processes read it.

Each generation answers on one reply channel of the channel layer: a channel of its own
(``reply_channel_new``) that the API view reads, or the playground consumer's channel. The
messages, in order, all carrying the ``tag`` the request was queued with:

  ``inference.loading`` ``{model}``: (only when the model is not loaded yet) the worker loads it now
  ``inference.start``  ``{cache: "hit"|"miss", prompt_tokens}``: the model is loaded, the prompt fits
  ``inference.delta``  ``{text}``: the next piece of the reply; with tools offered, a call's pieces come
                       as ``{text: "", tool_call}`` (OpenAI's stream deltas: ``workers.inference.ToolCallStream``)
  ``inference.done``   ``{text, finish_reason, prompt_tokens, completion_tokens}``
  ``inference.error``  ``{message, code, param}``: instead of the rest, whenever something fails

An API view's channel is a plain (not process-local ``!``) channel, so whichever thread's
event loop serves the request can read it.
"""

import asyncio
import time
import uuid

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

REPLY_PREFIX = "inference-reply."
END_TYPES = ("inference.done", "inference.error")
# A reader that stopped reading leaves its channel full: after this many seconds of retries the
# worker stops generating for it.
FULL_GIVE_UP_SECONDS = 10.0


def reply_channel_new() -> str:
    """A fresh channel for one generation's replies."""
    return f"{REPLY_PREFIX}{uuid.uuid4().hex}"


class ReplyGone(Exception):
    """Nobody reads the reply channel any more (it stayed full): stop generating."""


class ReplySender:
    """Sends one generation's messages in order, over one event loop (and Redis connection).

    Use as a context manager in a worker process (no event loop running in the thread).
    """

    def __init__(self, channel: str, tag: str = "") -> None:
        self.channel = channel
        self.tag = tag
        self.layer = get_channel_layer()
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "ReplySender":
        self.loop = asyncio.new_event_loop()
        return self

    def __exit__(self, *exc_info) -> None:
        self.loop.close()  # channels_redis closes this loop's connections with it

    def send(self, kind: str, **fields) -> None:
        message = {"type": f"inference.{kind}", "tag": self.tag, **fields}
        deadline = time.monotonic() + FULL_GIVE_UP_SECONDS
        delay = 0.01
        while True:
            try:
                self.loop.run_until_complete(self.layer.send(self.channel, message))
                return
            except ChannelFull:
                if time.monotonic() > deadline:
                    raise ReplyGone(f"{self.channel} stayed full for {FULL_GIVE_UP_SECONDS:g}s") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)


async def reply_receive(channel: str, timeout: float) -> dict:
    """The next message on ``channel``; ``TimeoutError`` when none comes within ``timeout`` seconds."""
    layer = get_channel_layer()
    message = await asyncio.wait_for(layer.receive(channel), timeout)
    # channels_redis removes a received message from its backup queue in a task of its own; let
    # it finish here, or a loop that closes next (async_to_sync's) cancels it and the message
    # comes again on the next receive.
    loop = asyncio.get_running_loop()
    cleaners = [c for c in list(getattr(layer, "receive_cleaners", [])) if c.get_loop() is loop]
    if cleaners:
        await asyncio.gather(*cleaners, return_exceptions=True)
    return message


async def replies_collect(channel: str, timeout: float) -> list[dict]:
    """Every message of one generation, up to and including ``done`` or ``error``.

    ``TimeoutError`` when the worker stays silent for ``timeout`` seconds at any point.
    """
    messages = []
    while not messages or messages[-1]["type"] not in END_TYPES:
        messages.append(await reply_receive(channel, timeout))
    return messages
