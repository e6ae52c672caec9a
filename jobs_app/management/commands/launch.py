"""`make run`: the whole platform on one machine (web, workers, beat and, if needed, the broker).

The processes' own output (Celery banners, access logs, library warnings) goes to one log file each
under ``DATA_DIR/logs``; this terminal gets a summary once the web server answers, and what goes wrong.
SIGINT, SIGTERM or SIGHUP (to this process, or to the `make` that runs it) stops every process it
started; if it is killed outright, they die with it (PR_SET_PDEATHSIG).
"""

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts_app.services import ApiKeyRefused, api_key_authenticate, api_key_replace
from finetune_site.embedded import PR_SET_PDEATHSIG, _die_with_parent, embedded_redis_alive, embedded_redis_start

STOP_SECONDS = 20  # a worker in the middle of a training step checkpoints it first (README: SIGTERM)
READY_SECONDS = 90
WORKERS = 3  # training, default, inference
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # our own port: never through a proxy


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path | None


class Command(BaseCommand):
    help = ("Start web, workers (default, training, inference) and beat (and the embedded broker when REDIS_URL "
            "is unset) until Ctrl-C, SIGINT or SIGTERM; their output goes to DATA_DIR/logs.")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--console-logs", action="store_true",
                            help="Let every process write to this terminal instead of DATA_DIR/logs.")

    def handle(self, *args, port: int, host: str, console_logs: bool, **options):
        stop = _Stop()  # first: a signal during the start stops what has started so far
        self.logs = None if console_logs else settings.DATA_DIR / "logs"
        if self.logs:
            self.logs.mkdir(parents=True, exist_ok=True)
        children: list[Child] = []
        redis = None
        try:
            if not settings.REDIS_URL and not embedded_redis_alive(settings.EMBEDDED_REDIS_SOCKET):
                redis = embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET)
            call_command("collectstatic", interactive=False, verbosity=0)
            password, api_key = _admin_password(), _admin_api_key()
            celery = [sys.executable, "-m", "celery", "-A", "finetune_site"]
            self.stdout.write("Starting web, workers and beat" + (
                f" (their output goes to {_shown(self.logs)}/)…" if self.logs else "…"))
            self.stdout.flush()
            worker = [*celery, "worker", "-l", "info", "-c", "1"]
            for name, command in (
                ("web", [sys.executable, "-m", "finetune_site.server", "--host", host, "--port", str(port)]),
                # Training has its own process so validation and estimates never wait behind a long run.
                ("worker-training", [*worker, "-Q", "training", "-n", "training@%h"]),
                ("worker-default", [*worker, "-Q", "default", "-n", "default@%h"]),
                # Chat replies (playground, /v1/chat/completions) from a process that keeps models loaded.
                ("worker-inference", [*worker, "-Q", "inference", "-n", "inference@%h"]),
                ("beat", [*celery, "beat", "-l", "info", "-s", str(settings.DATA_DIR / "celerybeat-schedule")]),
            ):
                if stop.requested:
                    break
                children.append(self._spawn(name, command))
            ready = not stop.requested and self._ready(host, port, children, stop)
            if ready:
                self._welcome(host, port, password, api_key, children)
                stop.wait(children)
            failed = next((c for c in children if c.process.poll() is not None), None)
            if failed and not stop.requested:
                self._report_exit(failed)
        finally:
            self._stop_all(children, redis, stop)
        if not stop.requested:  # a process died, or the web server never answered
            sys.exit(1)

    def _spawn(self, name: str, command: list[str]) -> Child:
        log = self.logs / f"{name}.log" if self.logs else None
        output = None
        if log:
            if log.exists():  # keep the previous run's log one start longer
                log.replace(log.with_suffix(".log.1"))
            output = open(log, "ab")
        try:
            # Its own process group: a terminal's Ctrl-C reaches the launcher alone, which stops the
            # children in order; a child's helpers (Celery's pool) share its group, to be killed with it.
            process = subprocess.Popen(command, preexec_fn=_die_with_parent, process_group=0, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT if output else None)
        finally:
            if output:
                output.close()
        return Child(name, process, log)

    def _ready(self, host: str, port: int, children: list[Child], stop: "_Stop") -> bool:
        """Wait until the web server answers /healthz and the three workers answer a ping (False when
        stopped, or when a process died first); a slow worker is reported, not waited for forever."""
        url = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/healthz"
        deadline = time.monotonic() + READY_SECONDS
        web, workers = False, set()
        while not stop.requested and all(c.process.poll() is None for c in children):
            web = web or _answers(url)
            workers = workers if len(workers) >= WORKERS else _workers_answering()
            if web and len(workers) >= WORKERS:
                return True
            if time.monotonic() > deadline:
                if not web:
                    self.stderr.write(f"The web server did not answer {url} within {READY_SECONDS} s; see "
                                      f"{_shown(self.logs / 'web.log') if self.logs else 'its output above'}.")
                    return False
                self.stderr.write(f"Only {len(workers)} of {WORKERS} workers answer after {READY_SECONDS} s; jobs "
                                  "wait in the queue until theirs does (see the worker logs).")
                return True
            stop.sleep(0.3)
        return False

    def _welcome(self, host: str, port: int, password: "_Secret", api_key: "_Secret", children: list[Child]) -> None:
        url = f"http://{host}:{port}/"
        rule = "─" * 78
        out = self.stdout.write
        out(rule)
        out(self.style.SUCCESS(f" finetune is running at {url}"))
        out("")
        login = f"user admin, password {password.value} (kept in {_shown(password.path)})" if password.new else \
            f"user admin, password in {_shown(password.path)}   (cat {_shown(password.path)})"
        out(f"   Log in    {login}")
        out("   Start     the dashboard walks you through it: sample dataset → job → playground")
        key = f"{api_key.value} (kept in {_shown(api_key.path)})" if api_key.new else f"in {_shown(api_key.path)}"
        out(f"   API       base_url {url}v1, key {key}")
        out(f"             export OPENAI_BASE_URL={url}v1 OPENAI_API_KEY=$(cat {_shown(api_key.path)})")
        out("   CLI       .venv/bin/python manage.py finetune FILE.jsonl --model tiny-llama")
        if self.logs:
            out(f"   Logs      {_shown(self.logs)}/ ({', '.join(c.log.name for c in children)}): "
                f"tail -f {_shown(self.logs)}/*.log")
        if settings.DEBUG:
            out(self.style.WARNING("   DEBUG     on (DEBUG=1, as `make run` asks): error pages show tracebacks and "
                                   "settings; keep it on this machine (DEBUG=0 make run turns it off)"))
        else:
            out("   DEBUG     off: error pages show no tracebacks (DEBUG=1 turns them on)")
        out(f"   Stop      Ctrl-C, or SIGINT/SIGTERM to `make` or to this launcher (pid {os.getpid()}): "
            "stops web, the 3 workers, beat" + (" and Redis" if not settings.REDIS_URL else ""))
        out(rule)
        self.stdout.flush()

    def _report_exit(self, child: Child) -> None:
        self.stderr.write(f"\nThe {child.name} process exited (code {child.process.returncode}); stopping the others.")
        if child.log and child.log.exists():
            tail = child.log.read_text(errors="replace").splitlines()[-20:]
            self.stderr.write(f"Its last lines ({_shown(child.log)}):\n  " + "\n  ".join(tail))

    def _stop_all(self, children: list[Child], redis: subprocess.Popen | None, stop: "_Stop") -> None:
        """SIGTERM to every child at once; SIGKILL to the process group of any still there after
        STOP_SECONDS (or at a second Ctrl-C); the broker last, so the workers can finish their acks."""
        running = [c for c in children if c.process.poll() is None]
        if running:
            self.stdout.write(f"Stopping {', '.join(c.name for c in running)}… (Ctrl-C again: at once)")
            self.stdout.flush()
        for child in running:
            _signal(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while any(c.process.poll() is None for c in running) and time.monotonic() < deadline and not stop.urgent:
            time.sleep(0.1)
        for child in children:  # the whole group: with a child, a pool process it may have left behind
            _signal_group(child.process.pid, signal.SIGKILL)
            if child.process.poll() is None:
                child.process.wait()
        if redis is not None and redis.poll() is None:
            redis.terminate()
            try:
                redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                redis.kill()
                redis.wait()
        if running:
            self.stdout.write("Stopped.")


@dataclass
class _Secret:
    value: str
    path: Path
    new: bool


def _admin_password() -> _Secret:
    """Create the admin user on first start; its password is kept in DATA_DIR/admin-password (0600)."""
    path = settings.DATA_DIR / "admin-password"
    user, created = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    new = created or not path.exists()
    if new:
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save()
        _private_write(path, password)
    return _Secret(path.read_text().strip(), path, new)


def _admin_api_key() -> _Secret:
    """The admin's launcher key, kept in DATA_DIR/api-key (the database has only its hash) so that
    every start finds the same key; a new one when that key is gone, revoked or expired."""
    path = settings.DATA_DIR / "api-key"
    if path.exists():
        try:
            if api_key_authenticate(raw_key=path.read_text().strip()).user.username == "admin":
                return _Secret(path.read_text().strip(), path, False)
        except ApiKeyRefused:
            pass
    _, raw_key = api_key_replace(user=get_user_model().objects.get(username="admin"), name="make run")
    _private_write(path, raw_key)
    return _Secret(raw_key, path, True)


def _private_write(path: Path, text: str) -> None:
    """Write a secret readable by this user only, from the first byte (no window with the umask's mode)."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)


def _answers(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _workers_answering() -> set[str]:
    from finetune_site.celery import app

    try:
        return {name for reply in app.control.ping(timeout=1.0) or [] for name in reply}
    except Exception:  # the broker is still starting
        return set()


def _shown(path: Path) -> str:
    """A path as short as it can be said from here: relative under the current directory."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class _Stop:
    """A stop request: SIGINT, SIGTERM or SIGHUP here, or one that reached the `make` running us.

    GNU make forwards SIGTERM to its child but, on SIGINT sent to make alone (not by a terminal to
    the whole process group), it only waits for its child: a script or service manager would wait
    forever. Started by make, the launcher therefore watches make's signal handlers: make resets a
    fatal signal's handler to the default before it waits, so a stop signal make caught at our start
    and no longer catches means make was told to stop. PR_SET_PDEATHSIG covers a killed make.
    """

    def __init__(self) -> None:
        self.requested = False
        self.urgent = False  # a second request, while stopping: kill rather than wait
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        self.parent = os.getppid()
        self.make_signals = _caught_signals(self.parent) if _parent_is_make(self.parent) else None
        if self.make_signals is not None:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def _handle(self, signum, frame) -> None:
        self.urgent = self.requested
        self.requested = True

    def _parent_stopping(self) -> bool:
        if os.getppid() != self.parent:
            return True  # our parent is gone
        if self.make_signals is None:
            return False
        now = _caught_signals(self.parent)
        return now is not None and bool(self.make_signals - now)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
        if self._parent_stopping():
            self.requested = True

    def wait(self, children: list[Child]) -> None:
        """Until a stop is requested or a child exits."""
        while not self.requested and all(c.process.poll() is None for c in children):
            self.sleep(0.5)


def _parent_is_make(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in ("make", "gmake")
    except OSError:
        return False


def _caught_signals(pid: int) -> set[int] | None:
    """Which of the stop signals process ``pid`` has a handler for (Linux /proc), or None if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                mask = int(line.split()[1], 16)
                return {s for s in (*STOP_SIGNALS, signal.SIGQUIT) if mask >> (s - 1) & 1}
    except (OSError, ValueError):
        return None
    return None
