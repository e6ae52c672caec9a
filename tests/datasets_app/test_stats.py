"""Token statistics (cached), dry runs, and jobs refused before they start when nothing is trainable."""

import pytest

from datasets_app import services
from datasets_app.models import TokenStats
from jobs_app.models import FineTuneJob
from jobs_app.services import job_validate
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


def test_stats_are_computed_by_a_task_then_served_from_the_cache(base_model, django_capture_on_commit_callbacks):
    user = make_user()
    dataset = make_dataset(user, rows=classification_rows(12))  # turning ready asked for the page's counts
    client = api_client(user)
    with django_capture_on_commit_callbacks() as callbacks:
        first = client.get(f"/v1/datasets/{dataset.id}/stats?model=tiny-llama")
    assert first.status_code == 202 and first.json()["status"] == "computing" and not callbacks
    services.token_stats_compute(dataset_id=dataset.id, model="tiny-llama")  # what the task does
    body = client.get(f"/v1/datasets/{dataset.id}/stats?model=tiny-llama&max_length=8").json()
    assert body["status"] == "ready" and body["rows"] == 12 and body["max_length"] == 8
    assert body["truncated_rows"] == 12 and body["tokens"]["completion"] > 0
    assert body["structure"]["roles"] == {"user": 12, "assistant": 12}
    assert body["suggested_max_length"] >= body["tokens"]["max"]
    assert client.get(f"/v1/datasets/{dataset.id}").json()["stats"]["rows"] == 12

    # the same bytes uploaded again (another dataset, another job) are not tokenized again
    with django_capture_on_commit_callbacks() as callbacks:
        again = make_dataset(user, rows=classification_rows(12))
    cached = client.get(f"/v1/datasets/{again.id}/stats?model=tiny-llama")
    assert cached.status_code == 200 and TokenStats.objects.count() == 1
    assert len(callbacks) == 2  # the quality task and the verdict; no counting


def test_another_users_same_file_is_counted_for_them(base_model):
    """The cache is per owner: an instant answer would tell one user that another holds the same bytes."""
    rows = classification_rows(12)
    first = make_dataset(rows=rows)
    services.token_stats_compute(dataset_id=first.id, model="tiny-llama")
    stranger = make_user()
    theirs = make_dataset(stranger, rows=rows)
    response = api_client(stranger).get(f"/v1/datasets/{theirs.id}/stats")
    assert response.status_code == 202 and response.json()["status"] == "computing"


def test_reading_never_restarts_a_failed_count_and_posting_does(base_model, django_capture_on_commit_callbacks):
    user = make_user()
    dataset = make_dataset(user)
    TokenStats.objects.filter(owner=user).update(status="failed", error="OSError: no tokenizer")
    client = api_client(user)
    with django_capture_on_commit_callbacks() as callbacks:
        for _ in range(3):
            body = client.get(f"/v1/datasets/{dataset.id}/stats").json()
            assert body["status"] == "failed" and body["error"] == "OSError: no tokenizer"
    assert not callbacks and TokenStats.objects.get(owner=user).status == "failed"
    with django_capture_on_commit_callbacks() as callbacks:
        again = client.post(f"/v1/datasets/{dataset.id}/stats", {"model": "tiny-llama"}, format="json")
    assert again.status_code == 202 and again.json()["status"] == "computing" and len(callbacks) == 1


def test_stats_need_a_ready_dataset_and_a_known_template(base_model, settings):
    user = make_user()
    client = api_client(user)
    dataset = make_dataset(user)
    assert client.get(f"/v1/datasets/{dataset.id}/stats?template=nope").status_code == 400
    assert client.get(f"/v1/datasets/{dataset.id}/stats?model=nope").status_code == 400
    settings.DATASET_INLINE_BYTES = 0
    pending = make_dataset(user)
    assert client.get(f"/v1/datasets/{pending.id}/stats").status_code == 409


def test_dry_run_shows_the_tokens_that_carry_loss(base_model):
    user = make_user()
    dataset = make_dataset(user, rows=classification_rows(4))
    body = api_client(user).get(f"/v1/datasets/{dataset.id}/dry-run?model=tiny-llama&rows=2&template=chatml").json()
    assert [r["row"] for r in body["rows"]] == [1, 2] and body["error"] is None
    first = body["rows"][0]
    learned = "".join(t["text"] for t in first["tokens"] if t["loss"])
    assert learned.startswith(classification_rows(4)[0]["messages"][1]["content"])
    assert "<|im_start|>user" in first["text"] and first["trainable_tokens"] > 0


def test_dry_run_with_own_template_and_prompt_completion(base_model):
    user = make_user()
    dataset = make_dataset(user, rows=classification_rows(2, chat=False))
    body = api_client(user).get(f"/v1/datasets/{dataset.id}/dry-run?max_length=4").json()
    assert all(r["truncated"] and r["trainable_tokens"] == 0 for r in body["rows"])


def test_job_whose_rows_would_have_no_trainable_tokens_fails_before_it_starts(base_model):
    rows = [{"prompt": "word " * 200, "completion": " done"}] + classification_rows(7, chat=False)
    dataset = make_dataset(rows=rows)
    job = make_job(dataset.owner, dataset=dataset, hyperparameters={"max_length": 64})
    job_validate(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.FAILED and job.error["code"] == "invalid_training_file"
    assert "1 rows would have no trainable tokens after truncation to max_length 64 (rows 1)" in job.error["message"]


def test_dry_run_loads_a_tokenizer_once_per_model_and_template(base_model, monkeypatch):
    from transformers import AutoTokenizer

    from datasets_app.selectors import _tokenizer_for, dataset_dry_run

    _tokenizer_for.cache_clear()
    loads = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: loads.append(a) or real(*a, **k))
    dataset = make_dataset(rows=classification_rows(4))
    for template in ("chatml", "chatml", ""):
        dataset_dry_run(dataset, base_model=base_model, template=template, max_length=64, rows=1)
    assert len(loads) == 2  # chatml once, the model's own once
    own = dataset_dry_run(dataset, base_model=base_model, template="", max_length=64, rows=1)
    assert "<|im_start|>" not in own["rows"][0]["text"]  # the cached chatml copy did not leak


def test_a_jobs_other_template_does_not_replace_the_statistics_the_dataset_page_shows(base_model):
    user = make_user()
    dataset = make_dataset(user, rows=classification_rows(4))
    own = services.token_stats_compute(dataset_id=dataset.id, model="tiny-llama")
    services.token_stats_compute(dataset_id=dataset.id, model="tiny-llama", template="llama3")
    shown = api_client(user).get(f"/v1/datasets/{dataset.id}").json()["stats"]
    assert shown["template"] == "" and shown["tokens"]["total"] == sum(own.totals)
