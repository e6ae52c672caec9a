"""Send to and listen on channel-layer groups from synchronous code, on one event loop per process.

``async_to_sync(layer.group_send)`` runs every call on a new event loop, and channels_redis keeps
its Redis connections per loop, so each message paid for a new loop, thread and connection. A
training worker publishes every second on a CPU that is busy training; one loop and its
connections, kept in a daemon thread, cost a fraction of that (see benchmarks/overhead.py).
"""

import asyncio
import os
import threading
from collections.abc import Callable

from channels.layers import get_channel_layer

TIMEOUT_SECONDS = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def group_send(group: str, message: dict) -> None:
    """Send ``message`` to ``group`` and wait until the layer has it; raises what the layer raises."""
    layer = get_channel_layer()
    if layer is None:
        return
    _run(layer.group_send(group, message))


def group_listen(group: str, callback: Callable[[dict], None]) -> Callable[[], None]:
    """Call ``callback(message)`` for every message sent to ``group`` (from the layer's thread: keep
    it short) until the returned function is called. Raises when the layer cannot be reached."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")

    async def listen(channel: str) -> None:
        while True:
            callback(await layer.receive(channel))

    async def start() -> tuple[str, asyncio.Task]:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel, asyncio.ensure_future(listen(channel))

    async def stop(channel: str, task: asyncio.Task) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await layer.group_discard(group, channel)

    channel, task = _run(start())
    return lambda: _run(stop(channel, task))


def _run(coroutine):
    future = asyncio.run_coroutine_threadsafe(coroutine, _layer_loop())
    try:
        return future.result(timeout=TIMEOUT_SECONDS)
    finally:
        future.cancel()  # a timed-out call must not finish later (a listener nobody stops)


def _layer_loop() -> asyncio.AbstractEventLoop:
    """This process's loop; a forked child (a Celery pool process) starts its own, as threads do
    not survive a fork."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
            threading.Thread(target=_loop.run_forever, daemon=True, name="channel-layer").start()
        return _loop
