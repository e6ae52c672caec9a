"""The dashboard's websocket: the running and queued jobs of the user's project, re-rendered when one
changes.

Every change of a job is also published to its project's group (``project-<id>-jobs``); the message
carries only the job id, and the list is read from the database for the socket's own user, so
the socket can only ever show the jobs of that user's project.
"""

from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from accounts_app.selectors import project_acting
from finetune_site.heartbeat import HeartbeatConsumer
from finetune_site.selectors import active_jobs_for
from jobs_app.broadcast import project_jobs_group


class DashboardConsumer(HeartbeatConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()
            return
        self.user = user
        self.sent = ""
        # Join before the first render: a change committed in between arrives as a message.
        project = await database_sync_to_async(project_acting)(user)
        await self.groups_join(project_jobs_group(project.id))
        await self.accept()
        await self.catch_up()  # a reconnect may have missed changes: start from the current list

    async def disconnect(self, code: int) -> None:
        await self.groups_leave()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the page sends nothing

    async def jobs_update(self, message: dict) -> None:
        await self.catch_up()

    async def catch_up(self) -> None:
        """The current list, unless that is what was sent last (a heartbeat with no change)."""
        html = await database_sync_to_async(active_jobs_html)(self.user)
        if html != self.sent:
            self.sent = html
            await self.send(text_data=html)


def active_jobs_html(user) -> str:
    """The dashboard's running and queued jobs partial, as the page renders it."""
    return render_to_string("finetune_site/partials/active_jobs.html", {"active": active_jobs_for(user)})
