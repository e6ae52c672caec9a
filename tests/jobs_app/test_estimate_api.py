"""POST /v1/fine_tuning/jobs/estimate: tokens × epochs and the cost before launch, checked as creation is,
creating nothing."""

import pytest
from django.test import override_settings
from django.urls import reverse

from datasets_app.models import TokenStats
from datasets_app.services.stats import _stats_key
from jobs_app.models import FineTuneJob, Worker
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user

pytestmark = pytest.mark.django_db
PRICES = {"local": {"gpu_hour_usd": 2.0, "cpu_hour_usd": 0.1},
          "openai": {"per_million_tokens": {"gpt-4o-mini-2024-07-18": 3.0}}}


def _body(dataset_id: str, model: str = "tiny-llama", **hyperparameters) -> dict:
    return {"model": model, "training_file": dataset_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}}


def _counted_tokens(dataset, base_model, max_length: int) -> int:
    stats = TokenStats.objects.get(**_stats_key(dataset, base_model, ""))
    assert stats.status == "ready"
    return round(sum(min(total, max_length) for total in stats.totals) * dataset.row_count / len(stats.totals))


@override_settings(PRICES=PRICES)
def test_estimate_counts_tokens_with_the_tokenizer_times_epochs_and_creates_no_job(base_model):
    user = make_user()
    dataset = make_dataset(user)  # no worker here: the estimate counts the small file itself
    response = api_client(user).post("/v1/fine_tuning/jobs/estimate", _body(dataset.id, n_epochs=3), format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    tokens = _counted_tokens(dataset, base_model, max_length=body["hyperparameters"]["max_length"])
    assert body["provider"] == "local" and body["tokens_basis"] == "tokenizer"
    assert body["tokens_per_epoch"] == tokens and body["trained_tokens"] == tokens * 3 > 0
    # no finished tiny-llama run to time it: the seconds and so the amount are unknown, with the reason
    assert body["seconds"] is None
    assert body["cost"]["amount"] is None and body["cost"]["basis"] == "cpu_hour" and body["cost"]["reason"]
    assert not FineTuneJob.objects.exists()


@override_settings(PRICES=PRICES)
def test_local_cost_is_hours_times_devices_times_the_gpu_hour_price(base_model):
    user = make_user()
    past = make_job(status="succeeded")
    FineTuneJob.objects.filter(pk=past.pk).update(metrics={"tokens_per_second": 50.0, "peak_memory_bytes": 2**20})
    Worker.objects.create(name="gpu-1", devices={"kind": "cuda", "count": 2, "memory_bytes": 80 * 2**30})
    dataset = make_dataset(user)
    body = api_client(user).post("/v1/fine_tuning/jobs/estimate", _body(dataset.id, n_epochs=2, devices=2),
                                 format="json").json()
    assert body["seconds"] > 0 and FineTuneJob.objects.count() == 1  # only the past run
    cost = body["cost"]
    assert cost["basis"] == "gpu_hour" and cost["currency"] == "usd"
    assert cost["price"]["usd_per_hour"] == 2.0 and cost["price"]["devices"] == 2
    assert cost["amount"] == pytest.approx(body["seconds"] / 3600 * 2 * 2.0, rel=1e-4)


def test_per_token_cost_is_tokens_times_the_price_per_million_and_unknown_models_say_why():
    from jobs_app.services import job_cost

    prices = PRICES["openai"]
    cost = job_cost(kind="openai", prices=prices, model="gpt-4o-mini-2024-07-18", tokens=2_500_000, seconds=None,
                    devices=1)
    assert cost == {"amount": 7.5, "currency": "usd", "basis": "per_token",
                    "price": {"usd_per_million_tokens": 3.0}}
    unknown = job_cost(kind="openai", prices=prices, model="my-model", tokens=10, seconds=None, devices=1)
    assert unknown["amount"] is None and "no price for 'my-model'" in unknown["reason"]


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "no-such-model"}, "model"),
    ({"n_epochs": 0}, "method.supervised.hyperparameters.n_epochs"),
    ({"training_file": "file-nope"}, "training_file"),
    ({"provider": "nowhere"}, "provider"),
])
def test_bad_estimate_input_is_the_same_400_as_creation_and_stores_nothing(base_model, body, param):
    user = make_user()
    dataset = make_dataset(user)
    client = api_client(user)
    request = _body(body.get("training_file", dataset.id), model=body.get("model", "tiny-llama"),
                    **({"n_epochs": body["n_epochs"]} if "n_epochs" in body else {}))
    estimate = client.post("/v1/fine_tuning/jobs/estimate", {**request, **({"provider": body["provider"]}
                                                                            if "provider" in body else {})},
                           format="json")
    assert estimate.status_code == 400 and estimate.json()["error"]["param"] == param
    if param != "provider":
        created = client.post("/v1/fine_tuning/jobs", request, format="json")
        assert created.status_code == 400 and created.json()["error"] == estimate.json()["error"]
    assert not FineTuneJob.objects.exists()


def test_wizard_review_shows_the_cost_line(client, base_model):
    user = make_user()
    client.force_login(user)
    dataset = make_dataset(user)
    past = make_job(status="succeeded")
    FineTuneJob.objects.filter(pk=past.pk).update(metrics={"tokens_per_second": 50.0, "peak_memory_bytes": 2**20})
    client.post(reverse("jobs:wizard_dataset"), {"training_file": dataset.id})
    client.post(reverse("jobs:wizard_model"), {"model": "tiny-llama", "objective": "supervised", "adapter": "lora",
                                               "suffix": "", "n_epochs": "2"})
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert 'id="cost"' in review and "per CPU-hour" in review and "about <strong>$" in review
