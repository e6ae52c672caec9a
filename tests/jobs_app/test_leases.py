"""Workers say they are alive for their whole life, idle or not; the reaper forgets the ones long gone."""

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from jobs_app.models import Worker
from jobs_app.selectors import workers_alive
from jobs_app.services import WorkerLiveness, jobs_reap
from jobs_app.tasks import _advertise_devices, _release_jobs_on_shutdown
from tests.e2e import wait_for

CPU = {"kind": "cpu", "count": 0, "cpus": 2}


def _last_seen(name: str):
    return Worker.objects.values_list("last_seen", flat=True).get(name=name)


@pytest.mark.django_db(transaction=True)  # the beats come from another thread, on its own connection
def test_an_idle_workers_row_keeps_being_refreshed_until_it_stops():
    Worker.objects.create(name="idle@a", devices=CPU)
    Worker.objects.filter(name="idle@a").update(last_seen=timezone.now() - timedelta(hours=1))
    assert not workers_alive().exists()  # silent for an hour: gone
    before = _last_seen("idle@a")

    liveness = WorkerLiveness(name="idle@a", period=0.05).start()
    try:
        first = wait_for(lambda: _last_seen("idle@a") > before and _last_seen("idle@a"), timeout=10,
                         what="a first beat")
        assert list(workers_alive().values_list("name", flat=True)) == ["idle@a"]
        wait_for(lambda: _last_seen("idle@a") > first, timeout=10, what="a later beat")
    finally:
        liveness.stop()
    stopped = _last_seen("idle@a")
    liveness.done.wait(0.3)
    assert _last_seen("idle@a") == stopped


@pytest.mark.django_db(transaction=True)
def test_a_deleted_workers_row_is_not_brought_back_by_its_beats():
    """Forgotten (by the reaper, an operator or a test's flush): its beats do not register it behind their back."""
    Worker.objects.create(name="gone@a", devices=CPU)
    liveness = WorkerLiveness(name="gone@a", period=0.05).start()
    try:
        first = wait_for(lambda: _last_seen("gone@a"), timeout=10, what="the row")
        wait_for(lambda: _last_seen("gone@a") > first, timeout=10, what="a beat")
        Worker.objects.filter(name="gone@a").delete()
        liveness.done.wait(0.3)  # several periods
    finally:
        liveness.stop()
    assert not Worker.objects.filter(name="gone@a").exists()


def _consumer(hostname: str):
    """What Celery's worker_ready signal sends for a worker of the training queue."""
    queues = SimpleNamespace(consume_from={"default": object(), "training": object()})
    return SimpleNamespace(hostname=hostname, app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)))


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_stops_cleanly_is_not_registered_again_by_its_last_beat(settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.05
    _advertise_devices(sender=_consumer("clean@a"))
    before = _last_seen("clean@a")
    wait_for(lambda: _last_seen("clean@a") > before, timeout=10, what="a beat while idle")
    _release_jobs_on_shutdown(sender="clean@a")
    assert not Worker.objects.filter(name="clean@a").exists()
    time.sleep(0.3)  # several periods: a beat still running would have registered it again
    assert not Worker.objects.filter(name="clean@a").exists()


@pytest.mark.django_db
def test_the_reaper_forgets_workers_unseen_for_a_day_and_keeps_the_others():
    Worker.objects.create(name="gone@a", devices=CPU)
    Worker.objects.create(name="quiet@b", devices=CPU)
    Worker.objects.filter(name="gone@a").update(last_seen=timezone.now() - timedelta(days=2))
    Worker.objects.filter(name="quiet@b").update(last_seen=timezone.now() - timedelta(hours=1))
    jobs_reap()
    # a worker process an earlier test started may have its row too
    assert list(Worker.objects.filter(name__in=["gone@a", "quiet@b"]).values_list("name", flat=True)) == ["quiet@b"]
