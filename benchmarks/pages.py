"""Server-side render time of each web page with 10k jobs in the database (a script, not a test).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/finetune .venv/bin/python benchmarks/pages.py [--jobs N]

It creates a throw-away test database next to DATABASE_URL's (``test_<name>``), fills it with one
user owning N jobs (and a long-running job with 2,000 metric events), renders every page through
Django's test client (the whole request: middleware, session, queries, templates) and prints
p50/p95 per page (and its first render, which loads what a process then keeps, such as the
tokenizer of the review's loss mask). The goal is under 100 ms each.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_site.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-not-a-secret")
os.environ.setdefault("DEBUG", "0")  # DEBUG keeps every query in memory: not what production runs
os.environ.setdefault("DB_CONN_MAX_AGE", "60")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        urls = _fill(args.jobs)
        _measure(urls, args.repeat)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _fill(count: int) -> dict[str, str]:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from datasets_app.models import Dataset
    from datasets_app.services import dataset_validate, token_stats_compute
    from jobs_app.models import FineTuneJob, JobEvent
    from jobs_app.services import job_event_add
    from models_app.base_models.services import base_model_builtin_ensure
    from models_app.models import FineTunedModel
    from tests.factories import make_dataset

    started = time.perf_counter()
    base = base_model_builtin_ensure()
    user = get_user_model().objects.create_user("bench", password="bench")
    other = get_user_model().objects.create_user("other", password="other")
    dataset = make_dataset(user)
    dataset_validate(dataset_id=dataset.id)  # ready, as a user's file is when they start the wizard
    token_stats_compute(dataset_id=dataset.id, model=base.name)  # counted once by a worker in production
    dataset.refresh_from_db()
    make_dataset(other)
    for index in range(50):
        Dataset.objects.create(owner=user, filename=f"set-{index}.jsonl", file=dataset.file.name, format="chat",
                               status="ready", row_count=100, byte_size=10_000, sha256=str(index))
    statuses = ["succeeded"] * 8 + ["failed", "cancelled"]
    now = timezone.now()
    hp = {"adapter": "lora", "n_epochs": 3, "batch_size": 4, "learning_rate": 1e-3, "max_length": 1024}
    jobs = [FineTuneJob(owner=user, dataset=dataset, base_model=base, hyperparameters=hp,
                        status=statuses[i % len(statuses)], started_at=now, finished_at=now,
                        trained_tokens=1000, event_seq=3)
            for i in range(count)]
    FineTuneJob.objects.bulk_create(jobs, batch_size=2000)
    JobEvent.objects.bulk_create([JobEvent(job=job, seq=seq, message=f"event {seq}") for job in jobs
                                  for seq in (1, 2, 3)], batch_size=5000)
    FineTuneJob.objects.bulk_create([FineTuneJob(owner=other, dataset=dataset, base_model=base, hyperparameters=hp)
                                     for _ in range(count // 10)], batch_size=2000)
    live = FineTuneJob.objects.create(owner=user, dataset=dataset, base_model=base, hyperparameters=hp,
                                      status="running", started_at=now)
    for _ in range(3):
        FineTuneJob.objects.create(owner=user, dataset=dataset, base_model=base, hyperparameters=hp, status="queued")
    JobEvent.objects.bulk_create([
        JobEvent(job=live, seq=step, type="metrics", message=f"Step {step}/3000",
                 data={"step": step, "total_steps": 3000, "train_loss": 3 / step, "learning_rate": 1e-3,
                       "tokens": step * 100})
        for step in range(1, 2001)])
    FineTuneJob.objects.filter(pk=live.pk).update(event_seq=2000)
    job_event_add(job_id=live.id, message="Saved checkpoint at step 2000")
    done = jobs[0]
    model = FineTunedModel.objects.create(id="ft:tiny-llama::bench", owner=user, job=done, base_model=base,
                                          name="bench", adapter="lora", adapter_path="models/x/adapter",
                                          artifact_files=["models/x/adapter.zip"])
    _analyze()
    print(f"filled {FineTuneJob.objects.count()} jobs, {JobEvent.objects.count()} events "
          f"in {time.perf_counter() - started:.1f}s")
    _wizard_state(user, dataset, base)
    return {
        "dashboard": "/",
        "jobs list": "/jobs/",
        "jobs list, page 100": "/jobs/?page=100",
        "jobs list, htmx filter": "/jobs/?status=failed",
        "job detail (2,000 metric events)": f"/jobs/{live.id}/",
        "job detail (finished)": f"/jobs/{done.id}/",
        "datasets list": "/datasets/",
        "dataset detail": f"/datasets/{dataset.id}/",
        "models list": "/models/",
        "model detail": f"/models/{model.id}/",
        "wizard step 1 (dataset)": "/jobs/new/",
        "wizard step 2 (base model, method)": "/jobs/new/model/",
        "wizard step 3 (review: estimate, loss mask)": "/jobs/new/review/",
        "dashboard active jobs (partial)": "/dashboard/active-jobs/",
        "api token": "/accounts/tokens/",
    }


def _analyze() -> None:
    """Refresh the planner's statistics, as autovacuum would after a bulk load: without them
    PostgreSQL believes the job table has a handful of rows and sorts all 10k of them."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


WIZARD: dict = {}


def _wizard_state(user, dataset, base) -> None:
    """What steps 1 and 2 leave in the session: a ready dataset, a base model and one setting."""
    WIZARD.update(training_file=dataset.id, validation_file="", model=base.name, suffix="bench",
                  hyperparameters={"adapter": "lora", "n_epochs": "2"})


def _measure(urls: dict[str, str], repeat: int) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    session = client.session
    session["job_wizard"] = WIZARD
    session.save()
    print(f"{'page':44} {'p50 ms':>8} {'p95 ms':>8} {'first ms':>9}")
    worst = 0.0
    for name, url in urls.items():
        headers = {"HX-Request": "true"} if "htmx" in name else {}
        started = time.perf_counter()  # the first render also loads what a process keeps (a tokenizer)
        assert client.get(url, headers=headers).status_code == 200, url
        first = (time.perf_counter() - started) * 1000
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        times.sort()
        p50, p95 = statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]
        worst = max(worst, p95)
        print(f"{name:44} {p50:8.1f} {p95:8.1f} {first:9.1f}")
    print(f"worst p95: {worst:.1f} ms ({'under' if worst < 100 else 'OVER'} the 100 ms goal)")


if __name__ == "__main__":
    main()
