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
from rest_framework.authtoken.models import Token

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
        children.append(_spawn([sys.executable, "-m", "daphne", "-b", host, "-p", str(port),
                                "finetune_site.asgi:application"]))
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
        token = Token.objects.get_or_create(user=get_user_model().objects.get(username="admin"))[0]
        self.stdout.write(self.style.SUCCESS(f"\nfinetune is running at http://{host}:{port}/"))
        self.stdout.write(f"  web UI:  http://{host}:{port}/  log in as admin, password {password}")
        self.stdout.write(f"  admin:   http://{host}:{port}/admin/")
        self.stdout.write(f"  API:     base_url=http://{host}:{port}/v1  api_key={token.key}")
        self.stdout.write("  CLI:     .venv/bin/python manage.py finetune FILE.jsonl --model tiny-llama")
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
