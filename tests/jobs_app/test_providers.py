"""Providers through the API: keys sealed and never shown, bad input refused with its param, jobs naming them."""

import pytest

from jobs_app.models import FineTuneJob, Provider
from jobs_app.services import job_actions, job_create, provider_api_key
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db
KEY = "sk-test-secret-key-9876"


def _add(client, **body):
    return client.post("/v1/providers", {"name": "acme", "base_url": "https://ft.example.com/v1/", "api_key": KEY,
                                         **body}, format="json")


def test_provider_key_is_stored_sealed_and_shown_only_by_its_last_characters():
    user = make_user()
    client = api_client(user)
    created = _add(client).json()
    assert created["name"] == "acme" and created["api_key"] == "…9876" and created["shared"] is False
    assert created["base_url"] == "https://ft.example.com/v1" and created["kind"] == "openai"
    provider = Provider.objects.get(pk=created["id"])
    assert KEY not in provider.api_key_sealed and provider_api_key(provider) == KEY
    listed = client.get("/v1/providers").json()["data"]
    assert [p["id"] for p in listed] == [created["id"]] and KEY not in str(listed)
    assert api_client(make_user()).get("/v1/providers").json()["data"] == []  # another user's is not theirs
    assert api_client(make_user()).get(f"/v1/providers/{created['id']}").status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"base_url": "ftp://ft.example.com"}, "base_url"),
    ({"base_url": "not a url"}, "base_url"),
    ({"name": "local"}, "name"),
    ({"name": "a b"}, "name"),
    ({"api_key": ""}, "api_key"),
    ({"kind": "azure"}, "kind"),
    ({"shared": True}, "shared"),  # only staff share a provider with everyone
])
def test_bad_provider_input_is_400_with_param_and_stores_nothing(body, param):
    response = _add(api_client(make_user()), **body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content
    assert not Provider.objects.exists()


def test_staff_share_a_provider_every_user_can_name(base_model):
    staff = make_user(is_staff=True)
    _add(api_client(staff), shared=True)
    user = make_user()
    assert [p["shared"] for p in api_client(user).get("/v1/providers").json()["data"]] == [True]
    dataset = make_dataset(user)
    job = job_create(owner=user, training_file=dataset.id, model="tiny-llama", provider="acme")
    assert job.provider.name == "acme" and job_actions(job) == {"cancel": True, "pause": False, "resume": False}


def test_job_naming_an_unknown_provider_is_400_and_creates_nothing(base_model):
    user = make_user()
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id, "provider": "nowhere"}
    response = api_client(user).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "provider"
    assert not FineTuneJob.objects.exists()


def test_job_api_shows_its_provider_and_a_provider_with_jobs_cannot_be_deleted(base_model):
    user = make_user()
    client = api_client(user)
    provider = _add(client).json()
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id, "provider": "acme"}
    job = client.post("/v1/fine_tuning/jobs", body, format="json").json()
    assert job["provider"] == "acme" and job["remote_job_id"] is None and job["fine_tuned_model"] is None
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["provider"] == "acme"
    refused = client.delete(f"/v1/providers/{provider['id']}")
    assert refused.status_code == 409 and Provider.objects.filter(pk=provider["id"]).exists()
    FineTuneJob.objects.all().delete()
    assert client.delete(f"/v1/providers/{provider['id']}").json()["deleted"] is True
    assert not Provider.objects.exists()


def test_estimate_on_a_remote_provider_prices_tokens_per_million_from_its_own_price_entry(base_model, settings):
    settings.PRICES = {**settings.PRICES, "acme": {"per_million_tokens": {"tiny-llama": 4.0}}}
    user = make_user()
    client = api_client(user)
    _add(client)
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id, "provider": "acme",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}
    estimate = client.post("/v1/fine_tuning/jobs/estimate", body, format="json").json()
    assert estimate["provider"] == "acme" and estimate["seconds"] is None  # the remote's pace is its own
    assert estimate["cost"]["basis"] == "per_token"
    assert estimate["cost"]["amount"] == pytest.approx(estimate["trained_tokens"] / 1e6 * 4.0)
    assert not FineTuneJob.objects.exists()


def test_wizard_review_prices_each_provider_and_starts_the_job_on_the_one_chosen(
        client, base_model, settings, django_capture_on_commit_callbacks):
    from django.urls import reverse

    settings.PRICES = {**settings.PRICES, "acme": {"per_million_tokens": {"tiny-llama": 4.0}}}
    user = make_user()
    client.force_login(user)
    _add(api_client(user))
    dataset = make_dataset(user)
    client.post(reverse("jobs:wizard_dataset"), {"training_file": dataset.id})
    client.post(reverse("jobs:wizard_model"), {"model": "tiny-llama", "objective": "supervised", "adapter": "lora",
                                               "suffix": "", "n_epochs": "2"})
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert 'id="providers"' in review and 'value="acme"' in review
    assert "training tokens at $4.0 per million" in review
    assert "no finished run of this model and adapter to time it" in review  # local: no pace yet
    with django_capture_on_commit_callbacks():
        client.post(reverse("jobs:wizard_review"), {"provider": "acme"})
    assert FineTuneJob.objects.get(owner=user).provider.name == "acme"
