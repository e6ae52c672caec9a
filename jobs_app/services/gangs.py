"""Jobs over several nodes (the hyperparameter ``nodes``): claimed by all their nodes together or not
at all.

The worker that takes the job's message is its first node. It opens a gang on the job (a fresh token,
the rendezvous endpoint, itself as first member) and sends one ``job_join`` per other node; an idle
training worker that takes one joins. Once every node has joined, the first node claims the job
(``job_claim``) and each member trains its share through torchrun. If they have not all joined within
``GANG_WAIT_SECONDS``, the gang is dissolved, the job says why it waits, and tries again later. While it
trains, a member that stops sending heartbeats is lost: the others stop their ranks and the job is
retried from its last checkpoint, as when a worker dies.
"""

import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from jobs_app import tasks
from jobs_app.models import FineTuneJob, JobEvent, Worker
from jobs_app.services.lifecycle import job_event_add
from workers.distributed import Rendezvous

Status = FineTuneJob.Status
Claim = Callable[..., FineTuneJob | None]


def job_nodes(job: FineTuneJob) -> int:
    return job.hyperparameters.get("nodes", 1)


def gang_claim(*, job_id: str, worker: str, claim: Claim) -> FineTuneJob | None:
    """As the job's first node: gather its other nodes, then ``claim`` it (``job_claim``) for all."""
    token = _gang_open(job_id, worker)
    if token is None:
        return None
    for _ in range(job_nodes(FineTuneJob.objects.get(pk=job_id)) - 1):
        tasks.job_join.delay(job_id, token)
    deadline = time.monotonic() + settings.GANG_WAIT_SECONDS
    while time.monotonic() < deadline and not _gang_full(job_id, token):
        time.sleep(0.5)
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=job_id)
        if job.gang.get("token") != token:
            return None
        if len(job.gang["members"]) == job_nodes(job):
            claimed = claim(job_id=job_id, worker=worker)
            if claimed is not None:
                FineTuneJob.objects.filter(pk=job_id).update(gang={**job.gang, "attempt": claimed.attempt})
                claimed.refresh_from_db()
                return claimed
        _gang_dissolve(job)
    if FineTuneJob.objects.filter(pk=job_id, status=Status.QUEUED).exists():
        tasks.job_run.apply_async((job_id,), countdown=settings.GANG_RETRY_SECONDS * random.uniform(1, 1.5))
    return None


def gang_join(*, job_id: str, token: str, worker: str, capacity: int) -> tuple[FineTuneJob, int] | None:
    """As another node: join the gang ``token`` if it still gathers and this worker has the devices
    (``capacity``) a node of the job needs; wait for the claim. Returns the claimed job and this node's
    place (1 and up), or None."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or not _gang_open_to(job, token, worker) or job.hyperparameters["devices"] > capacity:
            return None
        members = [*job.gang["members"], worker]
        job.gang = {**job.gang, "members": members}
        job.save(update_fields=["gang"])
    node = len(members) - 1
    job_event_add(job_id=job_id, message=f"Node {node + 1} of {job_nodes(job)} joined: {worker}")
    deadline = time.monotonic() + settings.GANG_WAIT_SECONDS + 30
    while time.monotonic() < deadline:
        job = FineTuneJob.objects.get(pk=job_id)
        if job.gang.get("token") != token:
            return None  # dissolved: the job waits for another try
        if job.status == Status.RUNNING and job.gang.get("attempt") == job.attempt:
            return job, node
        time.sleep(0.5)
    return None


def gang_rendezvous(job: FineTuneJob, node: int) -> Rendezvous:
    """Where this attempt's nodes meet (the first node's address, whose store it hosts), and the run id
    they share."""
    return Rendezvous(endpoint=job.gang["endpoint"], run_id=f"{job.id}-{job.attempt}", host=node == 0)


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


def _gang_open(job_id: str, worker: str) -> str | None:
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED or job.provider_id or _gang_gathering(job):
            return None
        token = uuid.uuid4().hex
        job.gang = {"token": token, "endpoint": f"{_node_address()}:{_free_port()}", "nodes": job_nodes(job),
                    "members": [worker], "since": timezone.now().isoformat()}
        job.save(update_fields=["gang"])
    return token


def _gang_gathering(job: FineTuneJob) -> bool:
    """Another first node is gathering this job's gang now (one that died while gathering is stale)."""
    if not job.gang.get("token") or "attempt" in job.gang:
        return False
    since = datetime.fromisoformat(job.gang["since"])
    return timezone.now() - since < timedelta(seconds=settings.GANG_WAIT_SECONDS + 30)


def _gang_open_to(job: FineTuneJob, token: str, worker: str) -> bool:
    gang = job.gang
    return (job.status == Status.QUEUED and gang.get("token") == token and "attempt" not in gang
            and worker not in gang["members"] and len(gang["members"]) < gang["nodes"])


def _gang_full(job_id: str, token: str) -> bool:
    gang = FineTuneJob.objects.values_list("gang", flat=True).get(pk=job_id)
    return gang.get("token") != token or len(gang["members"]) >= gang["nodes"]


def _gang_dissolve(job: FineTuneJob) -> None:
    """Not every node joined in time: the job stays queued, saying why, and tries again later."""
    nodes, joined = job_nodes(job), len(job.gang["members"])
    workers = Worker.objects.count()
    reason = (f"waiting for {nodes} training workers free at once (a {nodes}-node job): {joined} answered in "
              f"{settings.GANG_WAIT_SECONDS}s; {workers} registered")
    FineTuneJob.objects.filter(pk=job.pk).update(gang={}, wait_reason=reason)
    if job.wait_reason != reason:
        job_event_add(job_id=job.id, level=JobEvent.Level.WARN, message=reason[0].upper() + reason[1:])


def _node_address() -> str:
    return settings.NODE_ADDRESS or socket.gethostname()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]
