"""The README's vision screenshots, taken again (a script, not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/finetune .venv/bin/python docs/screenshots.py

It creates a throw-away database next to DATABASE_URL's (``test_<name>``), uploads a ZIP of generated
shapes (3 classes, one image twice under two labels) as a user would, checks it, and trains
a ``native`` vision job in a child process while the production web server (``finetune_site.server``, DEBUG
off) serves the pages to Debian's Chromium (``/usr/bin/chromium``, through Playwright). It saves:

- ``docs/vision_dataset.png``: the dataset's report page (class chart, thumbnails per class, the
  duplicate named by path);
- ``docs/vision_job.png``: the job page while it trains (loss per epoch, learning rate, log), then
  ``docs/vision_job_done.png`` once it finished (held-out evaluation, confusion matrix).

Nothing is downloaded; it takes about two minutes on CPU.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_site.settings")
os.environ.setdefault("SECRET_KEY", "screenshots-only-not-a-secret")
os.environ.setdefault("DEBUG", "0")
# Playwright's sync API runs an event loop in this thread; the script's few queries (counting epochs)
# block nothing that matters, so Django may run them here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-gpu"]
OUT = ROOT / "docs"
PASSWORD = "pw-screenshots"
EPOCHS = 10


def main() -> None:
    import subprocess

    import django

    django.setup()
    from django.db import connection

    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, check=True)
    old_name = connection.settings_dict["NAME"]
    test_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        _shoot(_database_url(test_name))
    finally:
        _destroy(old_name)


def _destroy(old_name: str) -> None:
    """Drop the throw-away database once the last connection to it (the web server's) has closed."""
    from django.db import OperationalError, connection, connections

    for _ in range(20):
        connections.close_all()
        try:
            return connection.creation.destroy_test_db(old_name, verbosity=0)
        except OperationalError:
            time.sleep(1)
    raise RuntimeError(f"could not drop the throw-away database {connection.settings_dict['NAME']}")


def _database_url(name: str) -> str:
    from django.conf import settings

    base = settings.DATABASES["default"]
    if base["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{name}"
    return f"postgres://{base['USER']}@{base['HOST']}:{base['PORT']}/{name}"


def _shoot(database_url: str) -> None:
    from playwright.sync_api import sync_playwright

    from tests.e2e import WebServer

    user, dataset, job = _fill()
    server = WebServer(database_url)
    server.start()
    trainer = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1200, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(server.url + "/accounts/login/")
            page.get_by_label("Username").fill(user.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(server.url + "/")

            page.goto(f"{server.url}/datasets/{dataset.id}/")
            page.wait_for_load_state("networkidle")
            _save(page, "vision_dataset.png")

            trainer = _train(job.id, database_url)
            page.goto(f"{server.url}/jobs/{job.id}/")
            _wait(lambda: _epochs(job.id) >= EPOCHS // 2, "half of the epochs")
            page.reload()
            page.wait_for_load_state("networkidle")
            _save(page, "vision_job.png")

            trainer.wait(timeout=600)
            page.reload()
            page.wait_for_load_state("networkidle")
            _save(page, "vision_job_done.png")
            browser.close()
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.kill()
        server.stop()


def _fill():
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    from datasets_app.services import dataset_upload, dataset_validate
    from jobs_app.models import FineTuneJob
    from jobs_app.services import job_create
    from models_app.base_models.services import base_model_builtin_ensure
    from tests.factories import archive_bytes
    from workers.sample_data import shape_image, shape_set

    base_model_builtin_ensure()
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    files = shape_set(60)
    files["squares/copy-of-a-circle.png"] = shape_image("circle", 0)  # a duplicate across classes: a warning
    upload = SimpleUploadedFile("shapes.zip", archive_bytes(files), content_type="application/zip")
    dataset = dataset_upload(owner=user, upload=upload, purpose="vision")
    dataset = dataset_validate(dataset_id=dataset.id) or dataset
    job = job_create(owner=user, training_file=dataset.id, model="cnn", objective="vision", suffix="shapes",
                     hyperparameters={"strategy": "native", "n_epochs": EPOCHS, "width": 16, "batch_size": 16,
                                      "early_stopping_patience": 0})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.QUEUED)
    return user, dataset, job


def _train(job_id: str, database_url: str):
    """Train the job in a process of its own (as a worker would), so that its connections end with it."""
    import subprocess

    code = f"import django; django.setup(); from jobs_app.services import job_run; job_run(job_id={job_id!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url})


def _epochs(job_id: str) -> int:
    from django.db import connections

    from jobs_app.models import JobEvent

    try:
        return JobEvent.objects.filter(job_id=job_id, type="metrics").count()
    finally:
        connections.close_all()  # opened inside Playwright's event loop: nothing outside it could close it


def _wait(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(0.5)


def _save(page, name: str) -> None:
    """A full-page PNG, palette-reduced to stay small in git (under 200 KB)."""
    from io import BytesIO

    from PIL import Image

    shot = Image.open(BytesIO(page.screenshot(full_page=True)))
    shot.convert("RGB").quantize(colors=64).save(OUT / name, optimize=True)
    print(f"{OUT / name}: {(OUT / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
