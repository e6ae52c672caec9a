"""`make run`: the whole platform on one machine (web, worker and, if needed, the broker)."""

import os
import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts_app.services import ApiKeyRefused, api_key_authenticate, api_key_replace
from finetune_site.embedded import _die_with_parent, embedded_redis_alive, embedded_redis_start


class Command(BaseCommand):
    help = ("Start web, workers (default, training, inference) and beat (and the embedded broker when REDIS_URL "
            "is unset) until Ctrl-C.")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default="127.0.0.1")

    def handle(self, *args, port: int, host: str, **options):
        children: list[subprocess.Popen] = []
        if not settings.REDIS_URL and not embedded_redis_alive(settings.EMBEDDED_REDIS_SOCKET):
            children.append(embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET))
        call_command("collectstatic", interactive=False, verbosity=0)
        children.append(_spawn([sys.executable, "-m", "finetune_site.server", "--host", host, "--port", str(port)]))
        celery = [sys.executable, "-m", "celery", "-A", "finetune_site"]
        # Training has its own process so validation and estimates never wait behind a long run.
        children.append(_spawn([*celery, "worker", "-l", "info", "-Q", "training", "-c", "1", "-n", "training@%h"]))
        children.append(_spawn([*celery, "worker", "-l", "info", "-Q", "default", "-c", "1", "-n", "default@%h"]))
        # Chat replies (playground, /v1/chat/completions) from a process that keeps models loaded.
        children.append(_spawn([*celery, "worker", "-l", "info", "-Q", "inference", "-c", "1",
                                "-n", "inference@%h"]))
        children.append(_spawn([*celery, "beat", "-l", "info", "-s", str(settings.DATA_DIR / "celerybeat-schedule")]))
        self._welcome(host, port)
        _wait(children)


    def _welcome(self, host: str, port: int) -> None:
        password = _admin_password()
        api_key = _admin_api_key()
        self.stdout.write(self.style.SUCCESS(f"\nfinetune is running at http://{host}:{port}/"))
        self.stdout.write(f"  web UI:  http://{host}:{port}/  log in as admin, password {password}")
        self.stdout.write(f"  admin:   http://{host}:{port}/admin/")
        self.stdout.write(f"  API:     base_url=http://{host}:{port}/v1  api_key={api_key}")
        self.stdout.write("  CLI:     .venv/bin/python manage.py finetune FILE.jsonl --model tiny-llama")
        if settings.DEBUG:
            self.stdout.write(self.style.WARNING(
                "  DEBUG is on (DEBUG=1, as `make run` asks): error pages show tracebacks and settings. "
                "Keep it on this machine; production runs with DEBUG off (README: Production deployment)."))
        else:
            self.stdout.write("  DEBUG is off: error pages show no tracebacks (DEBUG=1 turns them on).")
        self.stdout.write("  Ctrl-C stops everything.\n")


def _admin_password() -> str:
    """Create the admin user on first start; its password is kept in DATA_DIR/admin-password."""
    path = settings.DATA_DIR / "admin-password"
    user, created = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    if created or not path.exists():
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save()
        path.write_text(password)
        path.chmod(0o600)
    return path.read_text().strip()


def _admin_api_key() -> str:
    """The admin's launcher key, kept in DATA_DIR/api-key (the database has only its hash) so that
    every start prints the same key; a new one when that key is gone, revoked or expired."""
    path = settings.DATA_DIR / "api-key"
    if path.exists():
        try:
            if api_key_authenticate(raw_key=path.read_text().strip()).user.username == "admin":
                return path.read_text().strip()
        except ApiKeyRefused:
            pass
    _, raw_key = api_key_replace(user=get_user_model().objects.get(username="admin"), name="make run")
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(raw_key)
    return raw_key


def _spawn(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, preexec_fn=_die_with_parent)


def _wait(children: list[subprocess.Popen]) -> None:
    stop = {"now": False}

    def request_stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stop["now"] and all(child.poll() is None for child in children):
        time.sleep(0.5)
    for child in reversed(children):  # the broker last, so the worker can finish its ack
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
