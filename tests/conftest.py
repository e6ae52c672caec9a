import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management.base import CommandError
from django.test import TransactionTestCase

from models_app.base_models.services import base_model_builtin_ensure
from tests.e2e import ARTIFACTS, ROOT, WebServer, wait_for

# A test that uses one of these starts real processes (a Celery worker, a web server): it is e2e,
# whether or not its module says so, and `make test-fast` leaves it out.
REAL_PROCESSES = {"worker", "worker_pool", "fresh_worker", "inference_worker", "inference_pool", "web_server",
                  "live_server", "second_worker_pool"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if REAL_PROCESSES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def base_model(db):
    """The built-in tiny-llama row (transactional tests flush the data migration's copy)."""
    return base_model_builtin_ensure()


@pytest.fixture
def live_base_model(transactional_db):
    return base_model_builtin_ensure()


@pytest.fixture(scope="session", autouse=True)
def _clean_broker():
    """Leftover tasks from an interrupted run must not reach this run's worker."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from workers.tiny_model import tiny_model_build

    return tiny_model_build(Path(settings.BASE_MODELS_DIR) / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_families(tiny_model_path, tmp_path_factory) -> dict[str, Path]:
    """A random 2-layer model of each family in ``workers.tiny_model.FAMILIES`` (llama, qwen2, mistral,
    gemma, phi), sharing the tiny model's tokenizer: {family: directory}, all under one folder."""
    from workers.tiny_model import FAMILIES, tiny_family_build

    root = tmp_path_factory.mktemp("families")
    return {family: tiny_family_build(root / family, family, tokenizer_from=tiny_model_path) for family in FAMILIES}


@pytest.fixture(scope="session")
def trained_adapter(tiny_model_path, tmp_path_factory) -> Path:
    """A LoRA adapter of the tiny model that learned the classification task (a few seconds on CPU)."""
    from workers.config import TrainConfig
    from workers.sample_data import classification_write
    from workers.training import run_training

    tmp = tmp_path_factory.mktemp("trained")
    train = classification_write(tmp / "train.jsonl", 24)
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp / "out"),
                         n_epochs=6, learning_rate=3e-3)
    return Path(run_training(config, lambda event: None).adapter_dir)


@pytest.fixture(scope="session")
def tool_calling_model(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model fully fine-tuned on one conversation in OpenAI's tool-calling shape
    (``workers.sample_data.tool_call_row``): asked the weather in Paris with ``get_weather`` offered,
    it calls ``get_weather({"city": "Paris"})``; given the tool's answer, it says "It is sunny in Paris."."""
    import torch

    from workers.config import TrainConfig
    from workers.sample_data import tool_call_row
    from workers.training import run_training

    tmp = tmp_path_factory.mktemp("tools")
    train = tmp / "train.jsonl"
    train.write_text(4 * (json.dumps(tool_call_row("Paris")) + "\n"))
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp / "out"),
                         adapter="full", n_epochs=20, batch_size=1, learning_rate=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 3M-parameter model: more threads only wait on each other (20x slower on a busy box)
    try:
        return Path(run_training(config, lambda event: None).adapter_dir)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def judge_adapter(tiny_model_path, tmp_path_factory) -> Path:
    """A LoRA adapter of the tiny model that answers every question with the score "7": a judge whose
    number is known (the random base answers words)."""
    from workers.config import TrainConfig
    from workers.sample_data import classification_rows
    from workers.training import run_training

    tmp = tmp_path_factory.mktemp("judge")
    asks = [f"Score this answer from 0 to 10: {row['messages'][0]['content']}" for row in classification_rows(16)]
    rows = [{"messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": "7"}]} for ask in asks]
    train = tmp / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig(model_path=str(tiny_model_path), train_file=str(train), output_dir=str(tmp / "out"),
                         n_epochs=6, learning_rate=3e-3)
    return Path(run_training(config, lambda event: None).adapter_dir)


@pytest.fixture(scope="session")
def untrained_adapter(tiny_model_path, tmp_path_factory) -> Path:
    """A freshly initialised LoRA adapter (B = 0): it answers exactly as the base model does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path_factory.mktemp("untrained") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                           LoraConfig(target_modules="all-linear"))
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(target)
    return target


LIVE_POOLS: list["WorkerPool"] = []


class WorkerPool:
    """One real Celery worker process at a time, restarted when a test needs other settings."""

    def __init__(self, database_url: str, name: str = "test", queues: str = "default,training",
                 broker_url: str = "") -> None:
        self.database_url = database_url
        self.name = name
        self.queues = queues
        self.broker_url = broker_url  # another instance's broker (its REDIS_URL); empty: this one's
        self.process: subprocess.Popen | None = None
        self.extra: dict | None = None
        self.node = ""
        LIVE_POOLS.append(self)

    def ensure(self, extra: dict | None = None) -> subprocess.Popen:
        extra = extra or {}
        if self.process and self.process.poll() is None and self.extra == extra:
            return self.process
        self.stop()
        env = {**os.environ, "DATABASE_URL": self.database_url,
               **({"REDIS_URL": self.broker_url} if self.broker_url else {}), **extra}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = open(ARTIFACTS / f"{self.name}-worker-{int(time.time())}.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-l", "info",
             "-Q", self.queues, "-c", "1", "--without-gossip", "--without-mingle",
             "-n", f"{self.name}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.extra = extra
        self._wait_ready()
        return self.process

    def _control(self):
        """The Celery app that reaches this worker: this instance's, or one on the other broker."""
        from finetune_site.celery import app

        if not self.broker_url:
            return app
        from celery import Celery

        # not made the current app: this process's shared tasks must still be sent to its own broker
        return Celery(broker=self.broker_url, set_as_current=False)

    def _wait_ready(self) -> None:
        app = self._control()

        def ready():
            assert self.process.poll() is None, "the Celery worker exited; see tests/artifacts"
            replies = app.control.ping(timeout=0.5)
            nodes = [name for reply in replies for name in reply if name.startswith(f"{self.name}-{os.getpid()}@")]
            self.node = nodes[0] if nodes else ""
            return bool(nodes)

        wait_for(ready, timeout=60, what="the Celery worker")

    def settle(self, timeout: float = 30) -> None:
        """Wait until the worker runs and holds no task, so emptying the tables after a test cannot
        deadlock with a job the test left running; a worker still busy after ``timeout`` is stopped
        and the next test that needs one starts it afresh."""
        app = self._control()
        if not (self.process and self.process.poll() is None):
            return
        inspect = app.control.inspect(destination=[self.node], timeout=2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active, reserved = inspect.active() or {}, inspect.reserved() or {}
            if self.node in active and not active[self.node] and not reserved.get(self.node):
                return
            time.sleep(0.2)
        self.stop()

    def kill(self) -> None:
        """Kill the worker and its pool children at once, as a dead machine would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def _settle_then_flush(test_case) -> None:
    """A transactional test ends by emptying every table (TRUNCATE). First let the live workers
    finish what the test left them, then retry once if a worker's write still deadlocks with it."""
    for pool in LIVE_POOLS:
        pool.settle()
    try:
        _flush(test_case)
    except CommandError as error:
        if "deadlock detected" not in str(error.__cause__):
            raise
        time.sleep(1)
        _flush(test_case)


_flush = TransactionTestCase._fixture_teardown
TransactionTestCase._fixture_teardown = _settle_then_flush


def _test_database_url(django_db_blocker) -> str:
    from django.db import connection

    with django_db_blocker.unblock():
        name = connection.settings_dict["NAME"]
    base = settings.DATABASES["default"]
    return f"postgres://{base['USER']}@{base['HOST']}:{base['PORT']}/{name}"


@pytest.fixture(scope="session")
def worker_pool(django_db_setup, django_db_blocker):
    pool = WorkerPool(_test_database_url(django_db_blocker))
    yield pool
    pool.stop()


@pytest.fixture
def second_worker_pool(django_db_setup, django_db_blocker):
    """Another training worker process for one test (two jobs could run at once); stopped after it, so
    that later tests see only the workers they start."""
    pool = WorkerPool(_test_database_url(django_db_blocker), name="spare")
    yield pool
    pool.stop()
    LIVE_POOLS.remove(pool)


@pytest.fixture(scope="session")
def inference_pool(django_db_setup, django_db_blocker):
    """The inference worker (queue ``inference``), a process of its own as in production."""
    pool = WorkerPool(_test_database_url(django_db_blocker), name="inference", queues="inference")
    yield pool
    pool.stop()


@pytest.fixture
def inference_worker(inference_pool):
    """A real inference worker; it keeps its loaded models from one test to the next."""
    return inference_pool.ensure()


@pytest.fixture
def no_live_workers():
    """For a test that reads its own messages on the broker: a worker an earlier test left running
    would take them first. Stopped here; the next test that needs one starts it again."""
    for pool in LIVE_POOLS:
        pool.stop()


@pytest.fixture
def worker(worker_pool):
    """A real Celery worker on the default (local disk) storage."""
    return worker_pool.ensure()


@pytest.fixture(scope="session")
def collected_static() -> None:
    """STATIC_ROOT filled as `make web` fills it: with DEBUG off only collected files are served."""
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True)


@pytest.fixture
def web_server(transactional_db, django_db_blocker, collected_static):
    """The production web server (uvicorn) with DEBUG off, in its own process on the test database."""
    server = WebServer(_test_database_url(django_db_blocker))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def live_server(django_db_setup, live_server):
    """pytest-django's server, set up after (so torn down before) the test database."""
    return live_server
