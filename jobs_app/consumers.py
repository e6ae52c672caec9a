"""The live job page's websocket: history after the client's last sequence number, then live updates.

Every update is rendered from JobEvent rows (the durable history) with the page's own partials.
A ``job.update`` group message only says "there is something after seq N": the consumer reads
every row after the last one it sent, so a dropped or reordered message leaves no gap.
"""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from finetune_site.heartbeat import HeartbeatConsumer
from jobs_app import selectors
from jobs_app.broadcast import job_group
from jobs_app.live import job_update_html
from jobs_app.models import FineTuneJob, JobEvent

BATCH = 500


class JobConsumer(HeartbeatConsumer):
    async def connect(self) -> None:
        self.job_id = self.scope["url_route"]["kwargs"]["job_id"]
        job = await database_sync_to_async(_job_for)(self.scope.get("user"), self.job_id)
        if job is None:  # not logged in, or another user's job: refuse before joining anything
            await self.close()
            return
        self.job = job
        self.first_metric = None  # (data, time) of the first step: ETA and tokens/s count from it
        self.last_seq = _last_seq(self.scope.get("query_string", b""))
        # Join the group before reading the history: an event committed in between arrives as
        # a message and is skipped or read by seq, so nothing falls between the two.
        await self.groups_join(job_group(self.job_id))
        await self.accept()
        await self.catch_up()

    async def disconnect(self, code: int) -> None:
        await self.groups_leave()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # the page sends nothing; its last seq comes with the (re)connect URL

    async def job_update(self, message: dict) -> None:
        if message.get("event", {}).get("seq", 0) <= self.last_seq:
            return  # already sent with the history
        await self.catch_up()

    async def catch_up(self) -> None:
        """Every event after the last one sent, a batch at a time."""
        while True:
            html, last_seq, more = await database_sync_to_async(self._render_after)(self.last_seq)
            if html:
                await self.send(text_data=html)
                self.last_seq = last_seq
            if not more:
                return

    def _render_after(self, after_seq: int) -> tuple[str, int, bool]:
        events = selectors.job_history(self.job, after_seq=after_seq, limit=BATCH)
        if not events:
            return "", after_seq, False
        if any(e.type != JobEvent.Type.METRICS for e in events):
            self.job.refresh_from_db()  # status, timestamps and the result change with messages
        last_metric = None
        if all(e.type != JobEvent.Type.METRICS for e in events):
            last_metric = selectors.job_last_metric(self.job)
        if self.first_metric is None:
            self.first_metric = selectors.job_first_metric(self.job)
        html = job_update_html(self.job, events, last_metric=last_metric, first_metric=self.first_metric)
        return html, events[-1].seq, len(events) == BATCH


def _job_for(user, job_id: str) -> FineTuneJob | None:
    if user is None or not user.is_authenticated:
        return None
    return selectors.jobs_visible_to(user).filter(pk=job_id).first()


def _last_seq(query_string: bytes) -> int:
    values = parse_qs(query_string.decode()).get("last_seq", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0
