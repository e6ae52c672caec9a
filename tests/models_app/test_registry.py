"""The registry: versions per name, aliases with history, rollback, archive, lineage, privacy."""

import pytest

from jobs_app.models import FineTuneJob
from models_app.models import FineTunedModel
from models_app.selectors import model_get
from models_app.services import (
    alias_rollback,
    fine_tuned_model_create,
    model_archive,
    model_files_fetch,
    model_promote,
)
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return make_user("alice")


def _version(owner, adapter, suffix: str = "bot") -> FineTunedModel:
    job = make_job(owner)
    job.suffix = suffix
    job.save(update_fields=["suffix"])
    return fine_tuned_model_create(job=job, adapter_dir=adapter)


@pytest.fixture
def versions(base_model, alice, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    return [_version(alice, adapter) for _ in range(3)]


def test_models_of_one_name_get_increasing_versions(versions, alice, tmp_path):
    assert [m.version for m in versions] == [1, 2, 3]
    assert [m.semver for m in versions] == ["1.0.0", "1.0.1", "1.0.2"]  # the same data and settings: patches
    assert versions[2].reference == "bot@1.0.2"
    other = _version(alice, tmp_path / "adapter", suffix="other")
    assert other.version == 1


def test_a_job_finished_twice_keeps_its_first_model_and_files(alice, base_model, tmp_path):
    """A worker lost after registering the model, then the job finished again elsewhere: the second
    finish gets the same model and must not replace or delete the files the first one stored."""
    job = make_job(alice)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    for folder, text in ((first_dir, "first"), (second_dir, "second")):
        folder.mkdir()
        (folder / "adapter_config.json").write_text(text)
    first = fine_tuned_model_create(job=job, adapter_dir=first_dir)
    assert fine_tuned_model_create(job=job, adapter_dir=second_dir) == first
    fetched = model_files_fetch(first, tmp_path / "fetched")
    assert (fetched / "adapter_config.json").read_text() == "first"
    assert FineTunedModel.objects.filter(job=job).count() == 1


def test_promote_points_the_alias_and_the_reference_resolves(versions, alice):
    model_promote(model=versions[1], alias="production")
    assert model_get(alice, "bot@production") == versions[1]
    assert model_get(alice, "bot@v3") == versions[2]


def test_rollback_walks_back_through_earlier_versions(versions, alice):
    for model in versions:
        model_promote(model=model, alias="production")
    assert alias_rollback(owner=alice, name="bot", alias="production").model == versions[1]
    assert alias_rollback(owner=alice, name="bot", alias="production").model == versions[0]
    with pytest.raises(Exception, match="never pointed at an earlier version"):
        alias_rollback(owner=alice, name="bot", alias="production")
    assert alias_rollback(owner=alice, name="bot", alias="production", version=3).model == versions[2]


def test_archived_version_cannot_be_promoted_and_aliased_version_cannot_be_archived(versions):
    model_promote(model=versions[0], alias="staging")
    with pytest.raises(Exception, match="is staging"):
        model_archive(model=versions[0])
    model_archive(model=versions[1])
    with pytest.raises(Exception, match="archived"):
        model_promote(model=versions[1], alias="production")


def test_api_promote_rollback_and_history(versions, alice):
    client = api_client(alice)
    for model in versions[:2]:
        response = client.post(f"/v1/registry/models/{model.id}/promote", {"alias": "production"}, format="json")
        assert response.status_code == 200 and response.json()["aliases"] == ["production"]
    body = client.post("/v1/registry/names/bot/rollback", {"alias": "production"}, format="json").json()
    assert body["aliases"] == {"production": versions[0].id}
    assert [c["action"] for c in body["history"]] == ["rollback", "promote", "promote"]
    assert [(v["version"], v["version_number"]) for v in body["versions"]] == [("1.0.2", 3), ("1.0.1", 2),
                                                                               ("1.0.0", 1)]
    names = client.get("/v1/registry/names").json()["data"]
    assert names == [{"object": "registry.model", "name": "bot", "versions": 3, "latest": versions[2].id,
                      "aliases": {"production": versions[0].id}}]


def test_api_rejects_bad_aliases_with_the_parameter(versions, alice):
    client = api_client(alice)
    bad = client.post(f"/v1/registry/models/{versions[0].id}/promote", {"alias": "v2"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "alias"
    missing = client.post("/v1/registry/names/bot/rollback", {"alias": "canary"}, format="json")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "alias_not_found"


def test_delete_refuses_a_version_with_an_alias_then_deletes(versions, alice):
    client = api_client(alice)
    model_promote(model=versions[0], alias="production")
    refused = client.delete(f"/v1/models/{versions[0].id}")
    assert refused.status_code == 409 and "production" in refused.json()["error"]["message"]
    assert client.delete(f"/v1/models/{versions[1].id}").status_code == 200
    assert not FineTunedModel.objects.filter(pk=versions[1].id).exists()


def test_a_deleted_model_keeps_its_id_on_its_job(versions, alice):
    client = api_client(alice)
    model = versions[1]
    FineTuneJob.objects.filter(pk=model.job_id).update(status=FineTuneJob.Status.SUCCEEDED)
    assert client.get(f"/v1/fine_tuning/jobs/{model.job_id}").json()["fine_tuned_model"] == model.id
    assert client.delete(f"/v1/models/{model.id}").status_code == 200
    assert client.get(f"/v1/models/{model.id}").status_code == 404
    assert client.get(f"/v1/fine_tuning/jobs/{model.job_id}").json()["fine_tuned_model"] == model.id


def test_lineage_links_dataset_job_checkpoint_version_and_exports(versions, alice):
    client = api_client(alice)
    model = versions[0]
    body = client.get(f"/v1/registry/models/{model.id}/lineage").json()
    assert body["dataset"]["id"] == model.job.dataset_id and body["dataset"]["parents"] == []
    assert body["job"]["id"] == model.job_id
    assert body["version"] == {"id": model.id, "name": "bot", "version": "1.0.0", "version_number": 1,
                               "aliases": [], "archived": False, "promotion": None}
    assert body["exports"] == [] and body["checkpoint"] is None


def test_lineage_shows_the_dataset_version_chain(base_model, alice, tmp_path):
    from datasets_app.models import Dataset

    parent = make_dataset(alice)
    child = make_dataset(alice)
    Dataset.objects.filter(pk=child.pk).update(parent=parent, operations=[{"op": "dedup"}])
    job = make_job(alice, dataset=Dataset.objects.get(pk=child.pk))
    (tmp_path / "a").mkdir()
    model = fine_tuned_model_create(job=job, adapter_dir=tmp_path / "a")
    body = api_client(alice).get(f"/v1/registry/models/{model.id}/lineage").json()
    assert body["dataset"]["operations"] == [{"op": "dedup"}]
    assert body["dataset"]["parents"][0]["id"] == parent.id


def test_another_users_versions_are_404_everywhere(versions, alice):
    model_promote(model=versions[0], alias="production")
    bob = api_client(make_user("bob"))
    model = versions[0]
    for url in (f"/v1/registry/models/{model.id}/lineage", f"/v1/registry/models/{model.id}/evaluations",
                "/v1/registry/names/bot", "/v1/models/bot@production", f"/v1/models/{model.id}"):
        assert bob.get(url).status_code == 404, url
    for url in (f"/v1/registry/models/{model.id}/promote", f"/v1/registry/models/{model.id}/archive",
                "/v1/registry/names/bot/rollback"):
        assert bob.post(url, {"alias": "production"}, format="json").status_code == 404, url
    assert bob.get("/v1/registry/names").json()["data"] == []


def test_a_model_without_a_suffix_is_named_after_its_base_with_ft_never_the_base_itself(base_model, alice, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    first, second = _version(alice, adapter, suffix=""), _version(alice, adapter, suffix="")
    assert (first.name, first.reference, second.reference) == ("tiny-llama-ft", "tiny-llama-ft@1.0.0",
                                                                   "tiny-llama-ft@1.0.1")
    legacy = _version(alice, adapter, suffix="tiny-llama")  # a suffix from before the rule: still not the base's name
    assert legacy.name == "tiny-llama-ft" and legacy.version == 3
    assert model_get(alice, "tiny-llama").name == "tiny-llama" and model_get(alice, "tiny-llama") != legacy


def test_a_suffix_equal_to_a_base_model_name_is_refused_by_name(base_model, alice):
    client = api_client(alice)
    training_file = make_dataset(alice).id
    for suffix in ("tiny-llama", "Tiny-Llama"):
        response = client.post("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": training_file,
                                                        "suffix": suffix}, format="json")
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == "suffix" and error["code"] == "suffix_is_base_model"
        assert "tiny-llama-ft" in error["message"]  # says what an empty suffix gives
    ok = client.post("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": training_file,
                                              "suffix": "tiny-llama-topics"}, format="json")
    assert ok.status_code == 200
