"""The playground's websocket: a submitted form starts both replies; each piece of text is pushed
as it is generated.

The page's form arrives as JSON (htmx ``ws-send``). Both generations are queued for the
inference worker with this consumer's channel as the reply channel, tagged with the run and
the side, so pieces of an earlier run that are still arriving are dropped.
"""

import asyncio
import json
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from models_app import services
from models_app.forms import SIDES, PlaygroundForm
from models_app.playground import QUEUED, Pane, errors_html, pane_status_html, pane_text_html, panes_html, status_for
from models_app.selectors import model_public_id


class PlaygroundConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.run = 0
        self.started: set[str] = set()
        self.loading_since: dict[str, float] = {}
        self.watchdog: asyncio.Task | None = None
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "watchdog", None):
            self.watchdog.cancel()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        try:
            data = json.loads(text_data or "")
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return
        if not isinstance(data, dict):
            return
        self.run += 1
        self.started = set()
        self.loading_since: dict[str, float] = {}
        html, queued = await database_sync_to_async(self._start)(data, str(self.run))
        await self.send(text_data=html)
        if queued:
            if self.watchdog:
                self.watchdog.cancel()
            self.watchdog = asyncio.create_task(self._watch(str(self.run)))

    def _start(self, data: dict, run: str) -> tuple[str, bool]:
        form = PlaygroundForm(data, user=self.scope["user"])
        if not form.is_valid():  # a model the user may not see is refused here, before anything is queued
            return errors_html(form), False
        config = form.generate_config()
        panes = []
        for side, model in form.models().items():
            services.chat_completion_queue(model=model, config=config, reply_channel=self.channel_name,
                                           tag=f"{run}:{side}")
            panes.append(Pane(side, model_public_id(model), "waiting", QUEUED))
        return errors_html() + panes_html(panes, oob=True), True

    async def inference_loading(self, message: dict) -> None:
        await self._status(message)

    async def inference_start(self, message: dict) -> None:
        await self._status(message)

    async def inference_delta(self, message: dict) -> None:
        side = self._side(message)
        if side:
            await self.send(text_data=pane_text_html(side, message["text"]))

    async def inference_done(self, message: dict) -> None:
        await self._status(message)

    async def inference_error(self, message: dict) -> None:
        await self._status(message)

    async def _status(self, message: dict) -> None:
        side = self._side(message)
        if side is None:
            return
        self.started.add(side)
        if message["type"] == "inference.loading":
            self.loading_since[side] = time.monotonic()
        since = self.loading_since.get(side)
        state, status = status_for(message, loaded_in=time.monotonic() - since if since is not None else None)
        await self.send(text_data=pane_status_html(Pane(side, state=state, status=status)))

    def _side(self, message: dict) -> str | None:
        run, _, side = message.get("tag", "").partition(":")
        return side if run == str(self.run) and side in SIDES else None

    async def _watch(self, run: str) -> None:
        """Say so when the inference worker does not start a reply in time."""
        seconds = settings.INFERENCE_TIMEOUT_SECONDS
        await asyncio.sleep(seconds)
        if run != str(self.run):
            return
        for side in SIDES:
            if side not in self.started:
                status = "Error: " + services.NO_INFERENCE_WORKER.format(seconds=seconds)
                await self.send(text_data=pane_status_html(Pane(side, state="error", status=status)))
