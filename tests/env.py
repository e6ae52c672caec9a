"""Loaded with `-p tests.env` before Django reads its settings: the test environment.

Tests run against the real PostgreSQL and Redis on 127.0.0.1 (override with DATABASE_URL /
REDIS_URL). Each run gets a fresh DATA_DIR; the tiny base model is cached across runs.
"""

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/finetune")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("CHANNELS_PREFIX", "finetune-test")
os.environ.setdefault("BASE_MODELS_DIR", str(ROOT / "data" / "base_models"))
os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="finetune-test-")
os.environ["HF_HUB_OFFLINE"] = "1"
# Request threads of the live server must not keep connections open past the test database.
os.environ.setdefault("DB_CONN_MAX_AGE", "0")
# Short leases so fault tests see a dead worker in seconds (the reaper is called by the tests).
os.environ.setdefault("JOB_HEARTBEAT_SECONDS", "1")
os.environ.setdefault("JOB_LEASE_SECONDS", "4")
os.environ.setdefault("JOB_REQUEUE_SECONDS", "3")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Every test request comes from 127.0.0.1: the bad-key lockout per address must not trip across tests
# (tests of the lockout set it low themselves).
os.environ.setdefault("API_KEY_FAILURES_ALLOWED", "1000000")
os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
