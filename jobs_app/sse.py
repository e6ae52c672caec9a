"""A job's events as Server-Sent Events, for clients that do not speak websockets
(``GET /v1/fine_tuning/jobs/{id}/events?stream=true``).

Each event is ``id: <seq>`` and ``data: <the event object as JSON>``; a client that reconnects with
``Last-Event-ID`` gets the events after it. A comment every ``HEARTBEAT_SECONDS`` keeps proxies from
closing a quiet stream. Once the job has finished and every event was sent, a last ``event: end``
(data: the job's status) tells the client to stop rather than reconnect, and the stream closes.

An async generator: under ASGI Django would read a sync one to its end before sending a byte.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async

from jobs_app.models import FINISHED, FineTuneJob, JobEvent

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
BATCH = 500


def sse_message(data: dict | str, *, event_id: int | None = None, event: str | None = None) -> bytes:
    """One Server-Sent Event; ``data`` as JSON on one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    lines.append("data: " + (data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))))
    return ("\n".join(lines) + "\n\n").encode()


def last_event_seq(header: str | None) -> int:
    """The seq a reconnecting client saw last (its ``Last-Event-ID``); 0 for none or nonsense."""
    return int(header) if header and header.strip().isdigit() else 0


def _events_after(job_id: str, seq: int) -> tuple[str | None, list[JobEvent]]:
    # The status first: a finished job's events are all written (its final status is saved with its
    # event in one transaction), so none can come after those read next.
    status = FineTuneJob.objects.filter(pk=job_id).values_list("status", flat=True).first()
    return status, list(JobEvent.objects.filter(job_id=job_id, seq__gt=seq).order_by("seq")[:BATCH])


async def job_events_stream(job_id: str, *, after: int, render: Callable[[JobEvent], dict],
                            poll_seconds: float = POLL_SECONDS,
                            heartbeat_seconds: float = HEARTBEAT_SECONDS) -> AsyncIterator[bytes]:
    """The job's events after seq ``after`` as they are written, until the job has finished (or is deleted)."""
    read = sync_to_async(_events_after)
    quiet_since = time.monotonic()
    yield b"retry: 2000\n\n"  # reconnect after 2 s if the connection drops
    while True:
        status, events = await read(job_id, after)
        for event in events:
            yield sse_message(render(event), event_id=event.seq)
            after = event.seq
        if events:
            quiet_since = time.monotonic()
            if len(events) == BATCH:
                continue  # more are waiting: no pause
        if (status is None or status in FINISHED) and len(events) < BATCH:
            yield sse_message({"status": status or "deleted"}, event="end")
            return
        if time.monotonic() - quiet_since >= heartbeat_seconds:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(poll_seconds)
