"""The dataset page's websocket: validation progress and the verdict, then token statistics.

A ``dataset.update`` group message only says "something changed": the consumer reads the row
and renders the page's own partials, so a lost message costs nothing but a late update.
"""

from channels.db import database_sync_to_async

from datasets_app import selectors
from datasets_app.broadcast import dataset_group
from datasets_app.live import dataset_update_html
from datasets_app.models import Dataset
from finetune_site.heartbeat import HeartbeatConsumer


class DatasetConsumer(HeartbeatConsumer):
    async def connect(self) -> None:
        self.dataset_id = self.scope["url_route"]["kwargs"]["dataset_id"]
        dataset = await database_sync_to_async(_dataset_for)(self.scope.get("user"), self.dataset_id)
        if dataset is None:  # not logged in, or another user's dataset: refuse before joining anything
            await self.close()
            return
        self.sent = ""
        # Join before reading the row: a change committed in between arrives as a message.
        await self.groups_join(dataset_group(self.dataset_id))
        await self.accept()
        await self.catch_up()

    async def disconnect(self, code: int) -> None:
        await self.groups_leave()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the page sends nothing

    async def dataset_update(self, message: dict) -> None:
        await self.catch_up()

    async def catch_up(self) -> None:
        """The dataset as it stands, unless that is what was sent last (a heartbeat with no change)."""
        html = await database_sync_to_async(_render)(self.dataset_id)
        if html and html != self.sent:
            self.sent = html
            await self.send(text_data=html)


def _dataset_for(user, dataset_id: str) -> Dataset | None:
    if user is None or not user.is_authenticated:
        return None
    return selectors.datasets_visible_to(user).filter(pk=dataset_id).first()


def _render(dataset_id: str) -> str:
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    return dataset_update_html(dataset) if dataset is not None else ""
