"""Readiness: can this web process serve requests that need the database, Redis, storage and workers?

Each check answers ``{"ok": bool, "ms": float}`` plus an ``error`` that names the problem without
paths or host names (this endpoint answers anyone; the details go to the log).
"""

import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection

log = logging.getLogger(__name__)
WORKERS_CACHE_KEY = "readyz:workers"
PROBE = b"finetune readiness probe"


def readiness() -> dict:
    """Every check, and which are down; ``ok`` only when all are up."""
    checks = {"database": _timed(_database), "redis": _timed(_redis), "storage": _timed(_storage),
              "workers": _workers()}
    down = [name for name, check in checks.items() if not check["ok"]]
    return {"ok": not down, "down": down, "checks": checks}


def _timed(check) -> dict:
    started = time.monotonic()
    try:
        check()
        result = {"ok": True}
    except Exception as error:  # any failure means "not ready", never a 500
        log.warning("readiness: %s failed", check.__name__.strip("_"), exc_info=True)
        result = {"ok": False, "error": f"{check.__doc__} ({type(error).__name__})"}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> None:
    """the database does not answer"""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis_client():
    import redis

    options = {"socket_timeout": 1, "socket_connect_timeout": 1}
    if settings.REDIS_URL:
        return redis.Redis.from_url(settings.REDIS_URL, **options)
    return redis.Redis(unix_socket_path=str(settings.EMBEDDED_REDIS_SOCKET), **options)


def _redis() -> None:
    """Redis (broker, websockets, cache) does not answer"""
    _redis_client().ping()


def _storage() -> None:
    """storage cannot write, read back and delete a file"""
    name = default_storage.save(f"readyz/{uuid.uuid4().hex}.probe", ContentFile(PROBE))
    try:
        with default_storage.open(name, "rb") as handle:
            if handle.read() != PROBE:
                raise OSError("the probe read back differs from what was written")
    finally:
        default_storage.delete(name)


def _workers() -> dict:
    """At least one Celery worker answering per queue in ``READY_QUEUES``, asked at most once per
    ``READY_CACHE_SECONDS`` (a broadcast waits its whole timeout for replies). No queues (a Kubernetes
    web pod's readiness): nothing to ask."""
    if not settings.READY_QUEUES:
        return {"ok": True, "queues": {}, "ms": 0.0}
    try:
        cached = cache.get(WORKERS_CACHE_KEY)
    except Exception:  # the cache is Redis: its own check says so
        cached = None
    if cached is not None:
        return cached
    started = time.monotonic()
    queues = {queue: 0 for queue in settings.READY_QUEUES}
    try:
        from finetune_site.celery import app

        replies = app.control.inspect(timeout=1.0).active_queues() or {}
    except Exception as error:
        log.warning("readiness: workers could not be asked", exc_info=True)
        result = {"ok": False, "error": f"the broker does not answer ({type(error).__name__})", "queues": queues}
    else:
        for worker_queues in replies.values():
            for queue in {q.get("name") for q in worker_queues or []}:
                if queue in queues:
                    queues[queue] += 1
        missing = [queue for queue, count in queues.items() if not count]
        result = {"ok": not missing, "queues": queues}
        if missing:
            result["error"] = "no worker answers for queue " + ", ".join(missing)
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    try:
        cache.set(WORKERS_CACHE_KEY, result, settings.READY_CACHE_SECONDS)
    except Exception:
        pass
    return result
