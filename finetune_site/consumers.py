"""The dashboard's websocket: the user's running and queued jobs, re-rendered when one changes.

Every change of a job is also published to its owner's group (``user-<id>-jobs``); the message
carries only the job id, and the list is read from the database for the socket's own user, so
the socket can only ever show that user's jobs.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from finetune_site.selectors import active_jobs_for
from jobs_app.broadcast import user_jobs_group


class DashboardConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.user = user
        self.group = user_jobs_group(user.pk)
        # Join before the first render: a change committed in between arrives as a message.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_jobs()  # a reconnect may have missed changes: start from the current list

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the page sends nothing

    async def jobs_update(self, message: dict) -> None:
        await self._send_jobs()

    async def _send_jobs(self) -> None:
        await self.send(text_data=await database_sync_to_async(active_jobs_html)(self.user))


def active_jobs_html(user) -> str:
    """The dashboard's running and queued jobs partial, as the page renders it."""
    return render_to_string("finetune_site/partials/active_jobs.html", {"active": active_jobs_for(user)})
