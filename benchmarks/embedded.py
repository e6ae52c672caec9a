"""The embedded default for benchmarks: SQLite and the bundled Redis in a fresh DATA_DIR, and a real
Celery worker process, so jobs go through services, queue, worker, callbacks and events exactly as
a user's do. Import this module first: it sets the environment Django reads."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA_DIR = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
for name in ("DATABASE_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME"):
    os.environ.pop(name, None)
os.environ.update(DATA_DIR=str(DATA_DIR), DJANGO_SETTINGS_MODULE="finetune_site.settings",
                  BASE_MODELS_DIR=str(ROOT / "data" / "base_models"), HF_HUB_OFFLINE="1")


class EmbeddedPlatform:
    """A context manager: migrated database, bundled Redis and one worker on ``queues``."""

    queues = "default,training"

    def __enter__(self):
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from finetune_site.embedded import embedded_redis_start

        call_command("migrate", verbosity=0)
        self.redis = embedded_redis_start(settings.EMBEDDED_REDIS_SOCKET)
        self.log = open(DATA_DIR / "worker.log", "a")
        self.worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "finetune_site", "worker", "-l",
                                        "warning", "-Q", self.queues, "-c", "1"], cwd=ROOT,
                                       stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc_info) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=60)
        self.redis.terminate()
        self.log.close()
