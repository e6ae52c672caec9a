"""/healthz (the process answers) and /readyz (database, Redis, storage, a worker per queue)."""

import pytest
from django.core.cache import cache

from finetune_site import health
from tests.e2e import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_worker_answer():
    cache.delete(health.WORKERS_CACHE_KEY)
    yield
    cache.delete(health.WORKERS_CACHE_KEY)


def test_healthz_answers_without_asking_anything(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # even with Redis unreachable
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_readyz_is_503_naming_the_queues_no_worker_answers(client, settings):
    settings.READY_QUEUES = ["no-such-queue", "nor-this-one"]
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503 and body["ok"] is False and body["down"] == ["workers"]
    assert body["checks"]["workers"]["error"] == "no worker answers for queue no-such-queue, nor-this-one"
    assert body["checks"]["workers"]["queues"] == {"no-such-queue": 0, "nor-this-one": 0}
    assert all(body["checks"][part]["ok"] for part in ("database", "redis", "storage"))
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_is_503_naming_storage_when_it_cannot_write(client, settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the media directory should be")  # refuses even root
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocker / "media")}}}
    settings.READY_QUEUES = []
    body = client.get("/readyz").json()
    assert body["down"] == ["storage"]
    assert body["checks"]["storage"]["error"].startswith("storage cannot write, read back and delete a file (")
    assert str(tmp_path) not in str(body)  # no paths for strangers


def test_readyz_is_503_naming_redis_when_it_does_not_answer(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.READY_QUEUES = []
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["down"] == ["redis"]


def test_readyz_leaves_no_probe_behind(client, settings):
    from django.core.files.storage import default_storage

    settings.READY_QUEUES = []
    assert client.get("/readyz").status_code == 200
    assert default_storage.listdir("readyz")[1] == []


@pytest.mark.e2e
def test_readyz_is_200_when_every_queue_has_a_worker(client, worker, inference_worker):
    """The session's workers: one on default and training, the inference one."""
    def ready():
        cache.delete(health.WORKERS_CACHE_KEY)
        response = client.get("/readyz")
        return response if response.status_code == 200 else None

    body = wait_for(ready, timeout=30, what="/readyz 200").json()
    assert body["ok"] and body["down"] == []
    assert all(count >= 1 for count in body["checks"]["workers"]["queues"].values())
    assert set(body["checks"]["workers"]["queues"]) == {"default", "training", "inference"}
    # the workers' answer is kept for READY_CACHE_SECONDS: a burst of probes asks them once
    assert cache.get(health.WORKERS_CACHE_KEY)["ok"]
