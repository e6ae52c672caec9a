"""Semantic versions of the registry: the bump rule, a job's requested version, and ``name@1.4`` /
``name@^1`` resolution through the API."""

import pytest

from jobs_app.models import FineTuneJob
from models_app.models import FineTunedModel
from models_app.selectors import fine_tuned_model_find
from models_app.services import fine_tuned_model_create, model_archive
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def adapter(tmp_path):
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "adapter_config.json").write_text("{}")
    return directory


def _version(owner, adapter, *, objective: str | None = None, **job_fields) -> FineTunedModel:
    job = make_job(owner, suffix="bot", **job_fields)
    if objective:  # as if the job had trained another objective (its rows need not fit it here)
        FineTuneJob.objects.filter(pk=job.pk).update(objective=objective)
        job.refresh_from_db()
    return fine_tuned_model_create(job=job, adapter_dir=adapter)


def test_bump_rule_patch_for_settings_minor_for_data_major_for_objective(base_model, alice, adapter):
    first = _version(alice, adapter)
    settings_only = _version(alice, adapter, hyperparameters={"n_epochs": 2})
    same_again = _version(alice, adapter, hyperparameters={"n_epochs": 2})
    new_data = _version(alice, adapter, dataset=make_dataset(alice, rows=classification_rows(20, seed=3)))
    new_objective = _version(alice, adapter, objective="dpo")
    back_to_settings = _version(alice, adapter, hyperparameters={"n_epochs": 3}, objective="dpo")
    assert [m.semver for m in (first, settings_only, same_again, new_data, new_objective, back_to_settings)] == [
        "1.0.0", "1.0.1", "1.0.2", "1.1.0", "2.0.0", "2.0.1"]
    assert [m.version for m in (first, new_objective)] == [1, 5]  # the order made stays
    body = api_client(alice).get(f"/v1/models/{new_data.id}").json()
    assert (body["version"], body["version_number"], body["reference"]) == ("1.1.0", 4, "bot@1.1.0")


def test_the_same_rows_uploaded_again_are_the_same_data(base_model, alice, adapter):
    _version(alice, adapter)
    again = _version(alice, adapter, dataset=make_dataset(alice))  # another file id, the same sha256
    assert again.semver == "1.0.1"


def test_a_requested_version_wins_when_it_is_greater(base_model, alice, adapter):
    assert _version(alice, adapter, version="0.9.0").semver == "0.9.0"
    assert _version(alice, adapter).semver == "0.9.1"
    assert _version(alice, adapter, version="3.2.1").semver == "3.2.1"
    assert _version(alice, adapter).semver == "3.2.2"


@pytest.mark.parametrize(("version", "code"), [
    ("1.0.0", "version_not_newer"), ("0.5.0", "version_not_newer"), ("1.4", "invalid_version"),
    ("v2", "invalid_version"), ("01.2.3", "invalid_version"), ("2.0.0-beta", "invalid_version"),
])
def test_api_refuses_a_version_that_is_not_newer_or_not_semver(base_model, alice, adapter, version, code):
    _version(alice, adapter)
    response = api_client(alice).post("/v1/fine_tuning/jobs", {
        "model": "tiny-llama", "training_file": make_dataset(alice).id, "suffix": "bot", "version": version},
        format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("version", code)
    assert FineTuneJob.objects.count() == 1


def test_api_job_with_a_version_makes_that_version(base_model, alice, adapter):
    _version(alice, adapter)
    response = api_client(alice).post("/v1/fine_tuning/jobs", {
        "model": "tiny-llama", "training_file": make_dataset(alice).id, "suffix": "bot", "version": "2.0.0"},
        format="json")
    assert response.status_code == 200, response.content
    assert response.json()["version"] == "2.0.0"
    job = FineTuneJob.objects.get(pk=response.json()["id"])
    assert fine_tuned_model_create(job=job, adapter_dir=adapter).semver == "2.0.0"


def test_a_requested_version_overtaken_meanwhile_falls_back_to_the_rule_and_says_so(base_model, alice, adapter):
    _version(alice, adapter)
    waiting = make_job(alice, suffix="bot", version="2.0.0")
    _version(alice, adapter, version="4.0.0")  # finished first
    model = fine_tuned_model_create(job=waiting, adapter_dir=adapter)
    assert model.semver == "4.0.1"
    assert waiting.events.filter(level="warn", message__contains="no longer newer than 4.0.0").exists()


@pytest.fixture
def line(base_model, alice, adapter):
    """bot 1.0.0, 1.0.1, 1.1.0, 1.4.0, 1.4.3 and 2.0.0 (made in that order)."""
    return {v: _version(alice, adapter, version=v) for v in ("1.0.0", "1.0.1", "1.1.0", "1.4.0", "1.4.3", "2.0.0")}


@pytest.mark.parametrize(("tag", "expected"), [
    ("1.4.0", "1.4.0"), ("1.4", "1.4.3"), ("1.0", "1.0.1"), ("^1", "1.4.3"), ("1", "1.4.3"), ("^1.1", "1.4.3"),
    ("^1.4.1", "1.4.3"), ("2", "2.0.0"), ("^2", "2.0.0"), ("v2", "1.0.1"), ("1.2", None), ("3", None),
    ("1.4.1", None), ("^1.5", None),
])
def test_references_resolve_exact_minor_and_caret_ranges(line, alice, tag, expected):
    found = fine_tuned_model_find(alice, f"bot@{tag}")
    assert (found.semver if found else None) == expected


def test_ranges_skip_archived_versions_but_an_exact_version_still_resolves(line, alice):
    model_archive(model=line["1.4.3"])
    assert fine_tuned_model_find(alice, "bot@1.4").semver == "1.4.0"
    assert fine_tuned_model_find(alice, "bot@^1").semver == "1.4.0"
    assert fine_tuned_model_find(alice, "bot@1.4.3") == line["1.4.3"]


def test_api_resolves_ranges_for_models_and_chat_and_404s_the_unknown(line, alice, monkeypatch):
    from finetune_site.errors import Unavailable
    from models_app.services import inference

    queued = []

    def queue(*, model, config, reply_channel, tag=""):
        queued.append(model)
        raise Unavailable("no worker in this test", code="inference_unavailable")

    monkeypatch.setattr(inference, "chat_completion_queue", queue)
    client = api_client(alice)
    assert client.get("/v1/models/bot@^1").json()["id"] == line["1.4.3"].id
    assert client.get("/v1/models/bot@1.4.0").json()["version"] == "1.4.0"
    assert client.get("/v1/models/bot@1.9").status_code == 404
    assert client.post(CHAT, {"model": "bot@1.4", "messages": HELLO}, format="json").status_code == 503
    assert queued == [line["1.4.3"]]
    missing = client.post(CHAT, {"model": "bot@^3", "messages": HELLO}, format="json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert api_client(make_user()).get("/v1/models/bot@^1").status_code == 404


def test_rollback_takes_a_semantic_version(line, alice):
    client = api_client(alice)
    client.post(f"/v1/registry/models/{line['2.0.0'].id}/promote", {"alias": "production"}, format="json")
    body = client.post("/v1/registry/names/bot/rollback", {"alias": "production", "version": "1.1.0"},
                       format="json").json()
    assert body["aliases"] == {"production": line["1.1.0"].id}
    bad = client.post("/v1/registry/names/bot/rollback", {"alias": "production", "version": "1.1"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "version"


def test_registry_page_lists_semantic_versions(line, alice, client):
    client.force_login(alice)
    page = client.get("/models/registry/bot/").content.decode()
    assert ">2.0.0</a>" in page and ">1.4.3</a>" in page


def test_migration_gives_existing_versions_the_semver_the_rule_gives(base_model, alice, adapter):
    import importlib

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    made = [_version(alice, adapter), _version(alice, adapter, hyperparameters={"n_epochs": 2}),
            _version(alice, adapter, dataset=make_dataset(alice, rows=classification_rows(20, seed=3))),
            _version(alice, adapter, objective="dpo"), _version(alice, adapter, objective="dpo")]
    other = fine_tuned_model_create(job=make_job(alice, suffix="other"), adapter_dir=adapter)
    for model in [*made, other]:  # as before migration 0009: no semantic versions yet (apart, to stay unique)
        FineTunedModel.objects.filter(pk=model.pk).update(major=0, minor=0, patch=model.version)
    migration = importlib.import_module("models_app.migrations.0009_semver_card_usage")
    state = MigrationExecutor(connection).loader.project_state(("models_app", "0009_semver_card_usage"))
    with connection.schema_editor() as editor:
        migration.semver_assign(state.apps, editor)
    assert [FineTunedModel.objects.get(pk=m.pk).semver for m in made] == ["1.0.0", "1.0.1", "1.1.0", "2.0.0",
                                                                          "2.0.1"]
    assert FineTunedModel.objects.get(pk=other.pk).semver == "1.0.0"


def _wizard_model_step(client, owner, version: str):
    from django.urls import reverse

    client.force_login(owner)
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(owner).id})
    return client.post(reverse("jobs:wizard_model"), {"model": "tiny-llama", "objective": "supervised",
                                                      "adapter": "lora", "suffix": "bot", "version": version})


@pytest.mark.parametrize(("version", "message"), [
    ("1.0.0", "greater than"), ("1.4", "version must be a semantic version like 1.4.0"),
])
def test_wizard_refuses_a_version_the_api_refuses_next_to_the_field(client, base_model, alice, adapter, version,
                                                                    message):
    _version(alice, adapter)
    response = _wizard_model_step(client, alice, version)
    assert response.status_code == 200  # the step again, with the error at the field
    page = response.content.decode()
    assert 'id="error-version"' in page and message in page
    assert FineTuneJob.objects.count() == 1


def test_wizard_job_with_a_version_makes_that_version(client, base_model, alice, adapter,
                                                      django_capture_on_commit_callbacks):
    from django.urls import reverse

    _version(alice, adapter)
    assert _wizard_model_step(client, alice, "2.0.0")["Location"] == reverse("jobs:wizard_review")
    assert 'id="model-version">2.0.0' in client.get(reverse("jobs:wizard_review")).content.decode()
    with django_capture_on_commit_callbacks():
        client.post(reverse("jobs:wizard_review"), {"provider": "local"})
    job = FineTuneJob.objects.get(owner=alice, version="2.0.0")
    assert fine_tuned_model_create(job=job, adapter_dir=adapter).semver == "2.0.0"
