"""Jobs over several nodes in the queue's one order, against the database (no worker process: each claim is
called as a worker's message calls it, with the worker's name)."""

from datetime import timedelta
from html import escape
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts_app.selectors import project_personal
from jobs_app.models import FineTuneJob, Quota, Worker
from jobs_app.services import job_claim, job_claim_next
from jobs_app.services.gangs import GangSeat, gang_gather
from jobs_app.tasks import _advertise_devices, _release_jobs_on_shutdown
from tests.api import api_client
from tests.factories import make_job, make_usage, make_user

pytestmark = pytest.mark.django_db
Status = FineTuneJob.Status


@pytest.fixture(autouse=True)
def _no_other_workers():
    """Only the workers a test registers: a worker process an earlier test started may have left its row."""
    Worker.objects.all().delete()


def _queued(owner, **hyperparameters) -> FineTuneJob:
    return make_job(owner, status=Status.QUEUED, hyperparameters={"n_epochs": 1, **hyperparameters})


def _workers(*names: str, cpus: int = 1) -> None:
    for name in names:
        Worker.objects.create(name=name, devices={"kind": "cpu", "count": 0, "cpus": cpus})


def _seat(taken, job: FineTuneJob, node: int) -> None:
    assert isinstance(taken, GangSeat), taken
    assert (taken.job_id, taken.node) == (job.id, node)


def test_a_lighter_accounts_gang_gathers_before_a_heavier_accounts_older_job(base_model):
    heavy, light = make_user(), make_user()
    make_usage(heavy, minutes=10)
    older = _queued(heavy)
    gang = _queued(light, nodes=2)
    _workers("w1", "w2", "w3")

    # the older job's own messages: each free worker takes its seat in the gang first in the order
    _seat(job_claim_next(job_id=older.id, worker="w1"), gang, node=0)
    _seat(job_claim_next(job_id=older.id, worker="w2"), gang, node=1)
    older.refresh_from_db()
    gang.refresh_from_db()
    assert older.status == Status.QUEUED and older.attempt == 0
    assert gang.gang["members"] == ["w1", "w2"]
    assert gang.wait_reason == "gathering its 2 nodes: 2 of 2 joined"
    assert gang.events.filter(message="Node 2 of 2 joined: w2").count() == 1

    # complete: the gang cannot use a third worker, which takes the next job
    assert job_claim_next(job_id=older.id, worker="w3").id == older.id


def test_a_complete_gang_is_claimed_by_its_first_node_for_all(base_model):
    gang = _queued(make_user(), nodes=2)
    _workers("w1", "w2")
    first = job_claim_next(job_id=gang.id, worker="w1")
    job_claim_next(job_id=gang.id, worker="w2")
    claimed = gang_gather(seat=first, worker="w1", claim=job_claim)
    assert claimed.id == gang.id and claimed.status == Status.RUNNING
    assert claimed.gang["attempt"] == claimed.attempt == 1 and claimed.wait_reason == ""


def test_a_gang_does_not_jump_ahead_of_a_higher_priority_job_even_by_its_own_message(base_model):
    plain, urgent = make_user(), make_user()
    Quota.objects.create(project=project_personal(urgent), priority=5)
    gang = _queued(plain, nodes=2)
    first = _queued(urgent)
    _workers("w1", "w2")
    assert job_claim_next(job_id=gang.id, worker="w1").id == first.id
    gang.refresh_from_db()
    assert gang.gang == {} and gang.status == Status.QUEUED


def test_a_worker_with_fewer_devices_than_a_node_needs_takes_the_later_job(base_model):
    light, heavy = make_user(), make_user()
    make_usage(heavy, minutes=10)
    gang = _queued(light, nodes=2, devices=2)
    later = _queued(heavy)
    _workers("big-1", "big-2", cpus=2)
    _workers("small")
    _seat(job_claim_next(job_id=later.id, worker="big-1"), gang, node=0)
    assert job_claim_next(job_id=later.id, worker="small").id == later.id  # the gang could not use it
    gang.refresh_from_db()
    assert gang.gang["members"] == ["big-1"]


def test_a_dissolved_gang_gathers_again_before_the_later_job(base_model, settings):
    settings.GANG_WAIT_SECONDS = 0
    settings.GANG_RETRY_SECONDS = 3600  # its retry message is not what brings it back here
    light, heavy = make_user(), make_user()
    make_usage(heavy, minutes=10)
    gang = _queued(light, nodes=2)
    later = _queued(heavy)
    _workers("w1", "w2")
    first = job_claim_next(job_id=later.id, worker="w1")
    assert gang_gather(seat=first, worker="w1", claim=job_claim) is None  # nobody else joined in time
    gang.refresh_from_db()
    assert gang.gang == {} and gang.wait_reason.startswith("waiting for 2 training workers free at once")

    _seat(job_claim_next(job_id=later.id, worker="w1"), gang, node=0)  # the released worker: back to the gang
    later.refresh_from_db()
    assert later.status == Status.QUEUED


def test_gang_larger_than_the_registered_workers_waits_with_the_reason_and_reserves_nobody(base_model, client):
    owner, other = make_user(), make_user()
    gang = _queued(owner, nodes=3)
    later = _queued(other)
    _workers("w1", "w2")
    assert job_claim_next(job_id=gang.id, worker="w1").id == later.id
    gang.refresh_from_db()
    reason = "waiting for 3 training workers (a 3-node job); 2 are registered"
    assert gang.status == Status.QUEUED and gang.wait_reason == reason and gang.gang == {}
    assert api_client(owner).get(f"/v1/fine_tuning/jobs/{gang.id}").json()["wait_reason"] == reason
    client.force_login(owner)
    assert "Waiting: " + escape(reason) in client.get(reverse("jobs:detail", args=[gang.id])).content.decode()
    assert gang.events.filter(level="warn", message__startswith="Waiting for 3 training workers").count() == 1


def test_gang_does_not_count_a_registered_worker_unseen_lately(base_model):
    """A worker killed with kill -9 keeps its row; the gang must not gather on it forever."""
    gang = _queued(make_user(), nodes=2)
    _workers("w1", "dead")
    Worker.objects.filter(name="dead").update(last_seen=timezone.now() - timedelta(minutes=10))
    assert job_claim_next(job_id=gang.id, worker="w1") is None
    gang.refresh_from_db()
    assert gang.gang == {}  # nobody seated: it does not start gathering
    assert gang.wait_reason == ("waiting for 2 training workers (a 2-node job); 1 is registered; 1 more is "
                                "registered but not seen for over 45s (stopped?) and not counted")


def test_gang_waits_for_workers_with_the_devices_one_node_needs(base_model):
    gang = _queued(make_user(), nodes=2, devices=4)
    _workers("big", cpus=4)
    _workers("small", cpus=2)
    assert job_claim_next(job_id=gang.id, worker="big") is None
    gang.refresh_from_db()
    assert gang.wait_reason == "waiting for 2 training workers with 4 devices each (a 2-node job); 1 is registered"


def test_gang_of_an_account_at_its_concurrent_limit_waits_for_its_quota(base_model):
    limited, other = make_user(), make_user()
    Quota.objects.create(project=project_personal(limited), max_concurrent_jobs=1)
    make_usage(other, minutes=10)  # the gang is first in the order
    _workers("w1", "w2", "w3")
    running = _queued(limited)
    assert job_claim_next(job_id=running.id, worker="w1").id == running.id
    gang = _queued(limited, nodes=2)
    later = _queued(other)
    assert job_claim_next(job_id=gang.id, worker="w2").id == later.id
    gang.refresh_from_db()
    assert gang.wait_reason.startswith("waiting for a slot: 1 of the account's 1") and gang.gang == {}


def _consumer(hostname: str, *queues: str):
    """What Celery's worker_ready signal sends: the worker's consumer (its name, the queues it takes)."""
    consume_from = {name: object() for name in queues}
    return SimpleNamespace(hostname=hostname, app=SimpleNamespace(amqp=SimpleNamespace(
        queues=SimpleNamespace(consume_from=consume_from))))


def test_only_workers_that_take_training_jobs_register_as_nodes():
    _advertise_devices(sender=_consumer("trains@a", "default", "training"))
    try:
        _advertise_devices(sender=_consumer("infers@b", "inference"))
        _advertise_devices(sender=_consumer("checks@c", "default"))
        assert list(Worker.objects.values_list("name", flat=True)) == ["trains@a"]
    finally:
        _release_jobs_on_shutdown(sender="trains@a")  # stops its liveness thread with the test
