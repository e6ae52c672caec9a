"""Live sockets that survive a Redis restart or flush.

channels_redis keeps group membership in Redis: a FLUSHALL or a restart without persistence forgets
it, and the socket stays open but hears nothing again. So every ``LIVE_HEARTBEAT_SECONDS`` a
``HeartbeatConsumer`` adds its channel to its groups again (``group_add`` is idempotent) and sends
itself a heartbeat through the layer; the heartbeat calls ``catch_up()``, which reads the database
and sends what the socket missed meanwhile, as a reconnect with ``last_seq`` would. Going through the
layer proves it delivers, and runs the catch-up in turn with the group messages, never beside them.

When the layer cannot be reached, the socket is closed with 1011: the page reconnects (with its
``last_seq``) and polls until it can.
"""

import asyncio
import logging

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

logger = logging.getLogger(__name__)
LAYER_DOWN = 1011  # "internal error": htmx's ws extension and app.js reconnect after it


class HeartbeatConsumer(AsyncWebsocketConsumer):
    live_groups: tuple[str, ...] = ()
    heartbeat: asyncio.Task | None = None

    async def groups_join(self, *groups: str) -> None:
        """Join ``groups`` now and again at every heartbeat (call before ``accept``)."""
        self.live_groups = groups
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.heartbeat = asyncio.ensure_future(self._beat())

    async def groups_leave(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        for group in self.live_groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def catch_up(self) -> None:
        """Send what changed since the last message (read from the database)."""
        raise NotImplementedError

    async def live_heartbeat(self, message: dict) -> None:
        await self.catch_up()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_HEARTBEAT_SECONDS)
            try:
                for group in self.live_groups:
                    await self.channel_layer.group_add(group, self.channel_name)
                await self.channel_layer.send(self.channel_name, {"type": "live.heartbeat"})
            except Exception:  # noqa: BLE001 - any failure of the layer: the page falls back and reconnects
                logger.warning("channel layer unreachable; closing %s so the page reconnects", self.channel_name,
                               exc_info=True)
                await self.close(code=LAYER_DOWN)
                return
