"""The embedded default: SQLite, local files and the bundled Redis, all owned by `manage.py launch`."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import psutil
import pytest
import requests

from finetune_site.embedded import embedded_redis_alive
from jobs_app.management.commands.launch import STOP_SECONDS
from tests.e2e import free_port, wait_for
from workers.sample_data import classification_write

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


@pytest.fixture
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "CHANNELS_PREFIX"} and not k.startswith("AWS_")}
    env["DATA_DIR"] = str(tmp_path / "data")
    return env


def _manage(env, *args) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_launch_runs_a_job_on_sqlite_and_bundled_redis_and_dies_whole(embedded_env, tmp_path):
    _manage(embedded_env, "migrate", "-v0")
    port = free_port()
    output = tmp_path / "launch.log"
    launcher = subprocess.Popen([sys.executable, "manage.py", "launch", "--port", str(port)], cwd=ROOT,
                                env={**embedded_env, "DEBUG": "1"},  # as `make run` asks
                                stdout=output.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _healthy(port), timeout=90, what="the embedded web server")
        wait_for(lambda: "finetune is running" in output.read_text(errors="replace"), timeout=60, what="the welcome")
        welcome = output.read_text(errors="replace")
        assert "DEBUG     on (DEBUG=1, as `make run` asks)" in welcome
        data = Path(embedded_env["DATA_DIR"])
        for secret in ("admin-password", "api-key"):  # kept where the summary says, for this user only
            assert f"(kept in {data / secret})" in welcome and (data / secret).stat().st_mode & 0o777 == 0o600
        assert (data / "api-key").read_text() in welcome  # a new key is shown once, when it is made
        assert "celery" not in welcome.lower() and "Warning" not in welcome  # banners go to the logs
        assert "[tasks]" in (data / "logs" / "worker-training.log").read_text()
        children = psutil.Process(launcher.pid).children()
        assert len(children) == 6  # redis-server, web server, training, light and inference workers, beat
        token = _manage(embedded_env, "issue_token", "carol")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)
        reply = client.chat.completions.create(model="tiny-llama", max_tokens=3,
                                               messages=[{"role": "user", "content": "hi"}])
        assert reply.usage.completion_tokens == 3  # the inference worker answers
        file = client.files.create(file=classification_write(tmp_path / "t.jsonl", 16).open("rb"),
                                   purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id, hyperparameters={"n_epochs": 1})
        job = wait_for(lambda: _finished(client, job.id), timeout=180, interval=0.5, what="the job")
        assert job.status == "succeeded", job.error
        assert (Path(embedded_env["DATA_DIR"]) / "finetune.sqlite3").exists()
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
             timeout=30, what="the launcher's children to die with it")
    assert not embedded_redis_alive(Path(embedded_env["DATA_DIR"]) / "redis.sock")


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
    except requests.RequestException:
        return False


def _finished(client, job_id):
    job = client.fine_tuning.jobs.retrieve(job_id)
    return job if job.status in {"succeeded", "failed", "cancelled"} else None


def test_without_secret_key_a_private_random_key_is_made_once_and_kept(embedded_env):
    env = {name: value for name, value in embedded_env.items() if name not in {"SECRET_KEY", "DEBUG"}}
    show = "from django.conf import settings; print(settings.SECRET_KEY, settings.DEBUG)"
    first, second = (_manage(env, "shell", "-v", "0", "-c", show).split() for _ in range(2))
    assert first == second and first[1] == "False" and len(first[0]) >= 50
    path = Path(env["DATA_DIR"]) / "secret-key"
    assert path.read_text().strip() == first[0] and path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_make_run_stops_everything_it_started_on_a_signal_to_make(embedded_env, tmp_path, signum):
    """As a script or a service manager would: the signal goes to `make` alone (not to a terminal's
    process group), and every process `make run` started is gone within seconds."""
    _manage(embedded_env, "migrate", "-v0")
    port = free_port()
    output = tmp_path / "make.log"
    venv = Path(sys.executable).parent.parent  # `make run` with this interpreter; `-o migrate`: done above
    make = subprocess.Popen(["make", "-o", "migrate", "run", f"VENV={venv}", f"PORT={port}"], cwd=ROOT,
                            env=embedded_env, stdout=output.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: "finetune is running" in output.read_text(errors="replace"), timeout=120,
                 what="make run's summary")
        started = psutil.Process(make.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "manage.py launch" in names and "redis-server" in names and names.count("celery") >= 4
        assert output.read_text(errors="replace").rstrip().endswith("─" * 78)  # the summary comes last
        make.send_signal(signum)
        stopped_at = time.monotonic()
        make.wait(timeout=30)
        wait_for(lambda: not [p for p in started if _alive(p)], timeout=10,
                 what="every process make run started to stop")
        # idle workers stop in a few seconds; the launcher's bound is its grace, then SIGKILL (and the broker)
        assert time.monotonic() - stopped_at < STOP_SECONDS + 10
        assert "Stopped." in output.read_text(errors="replace")
        assert not embedded_redis_alive(Path(embedded_env["DATA_DIR"]) / "redis.sock")
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
