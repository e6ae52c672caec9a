"""Jobs over several nodes (the hyperparameter ``nodes``): claimed by all their nodes together or not
at all, in the queue's one order.

A free worker's claim walks the queue's order (``job_claim_next``). When the first job it may start is
one over several nodes, the worker takes a seat in that job's gang (``gang_seat``) instead of taking a
later job: with no gang gathering, it opens one (a fresh token, the rendezvous endpoint, itself as first
node) and sends one message per other node, so that free workers come and walk the order too; else it
joins the gathering gang. The rule: **a gathering gang reserves the workers that joined it**, and a
later job may take a free worker only if the gang cannot use it (the gang is complete, or the worker
has fewer devices than one node needs). A job that needs more workers than are registered and alive
(``workers_alive``: a worker killed without unregistering drops out) waits with that reason and reserves
nobody.

Once every node has joined, the first node claims the job (``job_claim``) and each member trains its
share through torchrun. If they have not all joined within ``GANG_WAIT_SECONDS``, the gang is dissolved,
the job says why it waits, and it gathers again from its place in the order (the workers it released go
back to it first). While it trains, a member that stops sending heartbeats is lost: the others stop
their ranks and the job is retried from its last checkpoint, as when a worker dies.

Each node stores its own part of every checkpoint (with sharding, its ranks' parts of the weights and
optimizer state, written on its own disk) under the same checkpoint; the part that completes it (every
node's stored) writes its manifest and its Checkpoint row (``gang_part_add``), so a checkpoint counts
only once whole, and each node of a later attempt downloads all of it to resume.
"""

import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from finetune_site.errors import Conflict
from jobs_app import tasks
from jobs_app.models import FineTuneJob, JobEvent, Worker
from jobs_app.selectors import worker_alive_seconds, workers_alive
from jobs_app.services.leases import worker_capacity
from jobs_app.services.lifecycle import job_event_add
from workers.distributed import Rendezvous

log = logging.getLogger(__name__)
Status = FineTuneJob.Status
Claim = Callable[..., FineTuneJob | None]


@dataclass(frozen=True)
class GangSeat:
    """A worker's place in the gang of a job over several nodes: node 0 gathers the others and claims the
    job; the others wait for that claim."""

    job_id: str
    token: str
    node: int


def job_nodes(job: FineTuneJob) -> int:
    return job.hyperparameters.get("nodes", 1)


def gang_shortfall(job: FineTuneJob) -> str:
    """Why a job over several nodes cannot gather now: fewer live registered workers have the devices one
    node needs than it has nodes ("" when enough do). Workers registered but unseen lately are not counted,
    and the reason says how many there are."""
    nodes, devices = job_nodes(job), job.hyperparameters.get("devices", 1)
    alive = list(workers_alive())
    able = sum(node.capacity >= devices for node in alive)
    if able >= nodes:
        return ""
    each = f" with {devices} devices each" if devices > 1 else ""
    reason = (f"waiting for {nodes} training workers{each} (a {nodes}-node job); {able} "
              f"{'is' if able == 1 else 'are'} registered")
    silent = Worker.objects.count() - len(alive)
    if silent:
        reason += (f"; {silent} more {'is' if silent == 1 else 'are'} registered but not seen for over "
                   f"{worker_alive_seconds()}s (stopped?) and not counted")
    return reason


def gang_seat(*, job: FineTuneJob, worker: str) -> GangSeat | None:
    """Seat ``worker`` in the gang of the queued ``job`` (its row locked, under the claim lock): open the
    gang as its first node when none gathers, else join it. None when the gang cannot use this worker:
    it is complete, the worker is in it already, or it has fewer devices than one node needs."""
    if job.hyperparameters.get("devices", 1) > worker_capacity(worker):
        return None
    if not _gang_gathering(job):
        job.gang = {"token": uuid.uuid4().hex, "endpoint": f"{_node_address()}:{_free_port()}",
                    "nodes": job_nodes(job), "members": [], "since": timezone.now().isoformat()}
    members = job.gang["members"]
    if worker in members or len(members) >= job.gang["nodes"]:
        return None
    job.gang = {**job.gang, "members": [*members, worker]}
    job.wait_reason = f"gathering its {job_nodes(job)} nodes: {len(members) + 1} of {job_nodes(job)} joined"
    job.save(update_fields=["gang", "wait_reason"])
    if members:
        job_event_add(job_id=job.id, message=f"Node {len(members) + 1} of {job_nodes(job)} joined: {worker}")
    return GangSeat(job_id=job.id, token=job.gang["token"], node=len(members))


def gang_gather(*, seat: GangSeat, worker: str, claim: Claim) -> FineTuneJob | None:
    """As the job's first node: wake the other nodes' workers, wait until they have joined, then ``claim``
    the job (``job_claim``) for all of them; or dissolve the gang and try again later."""
    for _ in range(job_nodes(FineTuneJob.objects.get(pk=seat.job_id)) - 1):
        tasks.job_run.delay(seat.job_id)  # whoever takes it walks the order: this gang is first in it
    deadline = time.monotonic() + settings.GANG_WAIT_SECONDS
    while time.monotonic() < deadline and not _gang_full(seat.job_id, seat.token):
        time.sleep(0.5)
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=seat.job_id)
        if job.gang.get("token") != seat.token:
            return None
        if len(job.gang["members"]) == job_nodes(job):
            claimed = claim(job_id=job.id, worker=worker)
            if claimed is not None:
                FineTuneJob.objects.filter(pk=job.id).update(gang={**job.gang, "attempt": claimed.attempt})
                claimed.refresh_from_db()
                return claimed
            FineTuneJob.objects.filter(pk=job.id).update(gang={})  # the claim said why it waits (its quota)
        else:
            _gang_dissolve(job)
    if FineTuneJob.objects.filter(pk=seat.job_id, status=Status.QUEUED).exists():
        tasks.job_run.apply_async((seat.job_id,), countdown=settings.GANG_RETRY_SECONDS * random.uniform(1, 1.5))
    return None


def gang_follow(*, seat: GangSeat) -> FineTuneJob | None:
    """As another node: wait until the first node claims the job for the gang ``seat.token``. Returns the
    claimed job, or None when the gang was dissolved (the job gathers again later)."""
    deadline = time.monotonic() + settings.GANG_WAIT_SECONDS + 30
    while time.monotonic() < deadline:
        job = FineTuneJob.objects.get(pk=seat.job_id)
        if job.gang.get("token") != seat.token:
            return None
        if job.status == Status.RUNNING and job.gang.get("attempt") == job.attempt:
            return job
        time.sleep(0.5)
    return None


def gang_rendezvous(job: FineTuneJob, node: int) -> Rendezvous:
    """Where this attempt's nodes meet (the first node's address, whose store it hosts), and the run id
    they share."""
    return Rendezvous(endpoint=job.gang["endpoint"], run_id=f"{job.id}-{job.attempt}", host=node == 0)


def gang_part_add(*, job: FineTuneJob, node: int, step: int, part: dict) -> dict | None:
    """Record that node ``node`` stored its part (``part``: its manifest, {step, metrics, files}) of the
    checkpoint at ``step``, in the caller's transaction (the job's row stays locked). Returns the whole
    checkpoint's manifest when every node's part is stored (the metrics the ranks logged, every node's
    files), else None. Raises Conflict when another attempt owns the job."""
    row = FineTuneJob.objects.select_for_update().get(pk=job.pk)
    if row.attempt != job.attempt:
        raise Conflict(f"job {job.id} attempt {job.attempt} is stale", code="stale_attempt")
    parts = dict(row.gang.get("parts", {}))
    stored = {**parts.pop(str(step), {}), str(node): part}
    whole = len(stored) >= job_nodes(row)
    if not whole:
        parts[str(step)] = stored
    FineTuneJob.objects.filter(pk=job.pk).update(gang={**row.gang, "parts": parts})
    if not whole:
        return None
    files = sorted({name for each in stored.values() for name in each["files"]})
    metrics = {key: value for each in stored.values() for key, value in each["metrics"].items()}
    return {"step": step, "metrics": metrics, "files": files}


def gang_parts_wait(job: FineTuneJob) -> None:
    """As the first node, before the attempt ends (finished or paused): wait until the other nodes'
    parts of the checkpoints it stored are stored too, so its last checkpoint is whole (at most
    ``JOB_LEASE_SECONDS``: a node that stopped is lost)."""
    deadline = time.monotonic() + settings.JOB_LEASE_SECONDS
    while FineTuneJob.objects.values_list("gang__parts", flat=True).get(pk=job.pk):
        if time.monotonic() > deadline:
            log.warning("job %s: checkpoint parts of another node never arrived", job.id)
            return
        time.sleep(0.2)


class NodeWatch:
    """``node_lost`` of ``run_distributed``: names another member of the gang whose worker sent no
    heartbeat for ``JOB_LEASE_SECONDS`` (asked often, it looks at most once per heartbeat period)."""

    def __init__(self, job: FineTuneJob, worker: str) -> None:
        self.others = [name for name in job.gang.get("members", ()) if name != worker]
        self.checked = time.monotonic()

    def __call__(self) -> str:
        if time.monotonic() - self.checked < settings.JOB_HEARTBEAT_SECONDS:
            return ""
        self.checked = time.monotonic()
        since = timezone.now() - timedelta(seconds=settings.JOB_LEASE_SECONDS)
        # a worker with no row (its row was removed by hand) cannot be judged: torchrun still notices it
        lost = list(Worker.objects.filter(name__in=self.others, last_seen__lt=since).values_list("name", flat=True))
        return f"node {lost[0]} sent no heartbeat for {settings.JOB_LEASE_SECONDS}s" if lost else ""


def _gang_gathering(job: FineTuneJob) -> bool:
    """Another first node is gathering this job's gang now (one that died while gathering is stale)."""
    if not job.gang.get("token") or "attempt" in job.gang:
        return False
    since = datetime.fromisoformat(job.gang["since"])
    return timezone.now() - since < timedelta(seconds=settings.GANG_WAIT_SECONDS + 30)


def _gang_full(job_id: str, token: str) -> bool:
    gang = FineTuneJob.objects.values_list("gang", flat=True).get(pk=job_id)
    return gang.get("token") != token or len(gang["members"]) >= gang["nodes"]


def _gang_dissolve(job: FineTuneJob) -> None:
    """Not every node joined in time: the job stays queued, saying why, and tries again later."""
    nodes, joined = job_nodes(job), len(job.gang["members"])
    workers = workers_alive().count()
    reason = (f"waiting for {nodes} training workers free at once (a {nodes}-node job): {joined} answered in "
              f"{settings.GANG_WAIT_SECONDS}s; {workers} registered and alive")
    FineTuneJob.objects.filter(pk=job.pk).update(gang={}, wait_reason=reason)
    if job.wait_reason != reason:
        job_event_add(job_id=job.id, level=JobEvent.Level.WARN, message=reason[0].upper() + reason[1:])


def _node_address() -> str:
    return settings.NODE_ADDRESS or socket.gethostname()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
