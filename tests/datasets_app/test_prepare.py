"""Preparing new versions through the API: lineage, the original untouched, bad requests are 400."""

import pytest

from datasets_app.models import Dataset
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db


def _rows(count: int):
    rows = [{"prompt": f"question {i} from me{i}@example.com", "completion": f"answer {i}",
             "source": "forum" if i % 2 else "docs"} for i in range(count)]
    return rows + rows[:3]  # three exact copies


def test_prepare_makes_train_and_validation_versions_with_lineage():
    user = make_user()
    parent = make_dataset(user, rows=_rows(20), name="qa.jsonl")
    original = parent.file.read()
    client = api_client(user)
    response = client.post(f"/v1/datasets/{parent.id}/prepare", {"operations": [
        {"op": "dedup"}, {"op": "mask_pii", "kinds": ["email"]}, {"op": "convert", "to": "chat"},
        {"op": "split", "validation_share": 0.2, "seed": 1}]}, format="json")
    assert response.status_code == 200, response.content
    train, validation = response.json()["data"]
    assert (train["filename"], validation["filename"]) == ("qa.v2.jsonl", "qa.v2.validation.jsonl")
    assert (train["rows"], validation["rows"]) == (16, 4)
    assert train["status"] == validation["status"] == "ready" and train["format"] == "chat"
    assert train["parent"] == parent.id
    assert [op["op"] for op in train["operations"]] == ["dedup", "mask_pii", "convert", "split", "part"]
    assert train["operations"][0]["rows_removed"] == 3 and train["operations"][1]["pieces_masked"] == 20
    preview = client.get(f"/v1/datasets/{train['id']}/preview?limit=50").json()["data"]
    assert all("[EMAIL]" in row["messages"][0]["content"] for row in preview)
    parent.refresh_from_db()
    assert parent.file.read() == original and parent.status == "ready"
    versions = client.get(f"/v1/datasets/{parent.id}/versions").json()["data"]
    assert [v["id"] for v in versions] == [parent.id, train["id"], validation["id"]]
    assert [v["id"] for v in client.get(f"/v1/datasets/{train['id']}/versions").json()["data"]] == [
        parent.id, train["id"]]


@pytest.mark.parametrize(("operations", "param"), [
    ([{"op": "shuffle"}], "operations[0].op"),
    ([{"op": "split", "validation_share": 2}], "operations[0].validation_share"),
])
def test_bad_preparation_is_400_and_makes_nothing(operations, param):
    user = make_user()
    parent = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare", {"operations": operations}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert list(Dataset.objects.all()) == [parent]


def test_preparation_that_leaves_no_row_is_400():
    user = make_user()
    parent = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare",
                                     {"operations": [{"op": "filter_length", "max_chars": 1}]}, format="json")
    assert response.status_code == 400 and "the operations leave no train rows" in response.json()["error"]["message"]
    assert list(Dataset.objects.all()) == [parent]


def test_large_parent_is_prepared_by_the_task(settings, django_capture_on_commit_callbacks):
    from datasets_app import services

    user = make_user()
    parent = make_dataset(user, rows=_rows(20), name="qa.jsonl")
    settings.DATASET_INLINE_BYTES = 0  # the parent now counts as large
    client = api_client(user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(f"/v1/datasets/{parent.id}/prepare", {"operations": [
            {"op": "dedup"}, {"op": "split", "validation_share": 0.25, "seed": 3}]}, format="json")
    train, validation = response.json()["data"]
    assert (train["status"], validation["status"], train["parent"]) == ("uploaded", "uploaded", parent.id)
    assert len(callbacks) == 1
    assert client.get(f"/v1/files/{train['id']}/content").status_code == 409  # nothing to download yet
    services.dataset_prepare_run(parent_id=parent.id, version_ids=[train["id"], validation["id"]],
                                 operations=[{"op": "dedup", "near": False, "near_threshold": 0.85},
                                             {"op": "split", "validation_share": 0.25, "seed": 3,
                                              "stratify": "source"}])
    train, validation = (client.get(f"/v1/datasets/{v['id']}").json() for v in (train, validation))
    assert (train["status"], train["rows"], validation["status"], validation["rows"]) == ("ready", 16, "ready", 4)
    assert train["operations"][0]["rows_removed"] == 3 and train["operations"][-1] == {"op": "part", "part": "train"}
    assert client.get(f"/v1/files/{train['id']}/content").status_code == 200


def test_task_preparation_that_leaves_no_row_makes_an_invalid_version(settings):
    from datasets_app import services

    user = make_user()
    parent = make_dataset(user)
    settings.DATASET_INLINE_BYTES = 0
    operations = [{"op": "filter_length", "max_chars": 1}]
    client = api_client(user)
    version = client.post(f"/v1/datasets/{parent.id}/prepare", {"operations": operations},
                                    format="json").json()["data"][0]
    services.dataset_prepare_run(parent_id=parent.id, version_ids=[version["id"]],
                                 operations=[{"op": "filter_length", "max_chars": 1, "min_chars": 0}])
    body = client.get(f"/v1/datasets/{version['id']}/report").json()
    assert body["status"] == "invalid" and "the operations leave no train rows" in body["summary"]
    parent.refresh_from_db()
    assert parent.status == "ready"


def test_filter_by_tokens_drops_long_rows_and_records_it_in_the_lineage(base_model):
    user = make_user()
    rows = [{"prompt": "hi", "completion": "yes"}, {"prompt": "tell me " * 60, "completion": "no"},
            {"prompt": "ok", "completion": "fine"}]
    parent = make_dataset(user, rows=rows, name="qa.jsonl")
    client = api_client(user)
    operation = {"op": "filter_length", "max_tokens": 40, "model": "tiny-llama"}
    response = client.post(f"/v1/datasets/{parent.id}/prepare", {"operations": [operation]}, format="json")
    assert response.status_code == 200, response.content
    version = response.json()["data"][0]
    assert version["rows"] == 2
    applied = client.get(f"/v1/datasets/{version['id']}/versions").json()["data"][-1]["operations"][0]
    assert {**operation, "template": "", "rows_removed": 1}.items() <= applied.items()
    kept = client.get(f"/v1/datasets/{version['id']}/preview").json()["data"]
    assert [row["prompt"] for row in kept] == ["hi", "ok"]


def test_filter_by_tokens_with_an_unknown_model_is_400(base_model):
    user = make_user()
    parent = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare", {"operations": [
        {"op": "dedup"}, {"op": "filter_length", "max_tokens": 40, "model": "gpt-9"}]}, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and (error["param"], error["code"]) == ("operations[1].model", "model_not_found")
    assert "gpt-9" in error["message"] and "tiny-llama" in error["message"]
    assert list(Dataset.objects.all()) == [parent]


def test_clean_language_quality_and_chunk_through_the_api_record_versioned_lineage(base_model):
    user = make_user()
    story = " ".join(f"Chapter {n} of the story tells what happened on day {n}." for n in range(12))
    rows = [{"text": "The caf\u00c3\u00a9  menu offers\x07 coffee\r\n\r\n\r\n\r\nand  cake to every guest."},
            {"text": "Das ist ein deutscher Satz über das Wetter in Berlin."},
            {"text": story}]
    parent = make_dataset(user, rows=rows, name="corpus.jsonl")
    client = api_client(user)
    operations = [{"op": "clean"}, {"op": "language", "keep": ["en"], "min_confidence": 0.3},
                  {"op": "quality"}, {"op": "chunk", "model": "tiny-llama", "max_tokens": 100, "overlap_tokens": 40}]
    response = client.post(f"/v1/datasets/{parent.id}/prepare", {"operations": operations}, format="json")
    assert response.status_code == 200, response.content
    version = response.json()["data"][0]
    applied = client.get(f"/v1/datasets/{version['id']}/versions").json()["data"][-1]["operations"]
    assert [(op["op"], op["version"]) for op in applied] == [("clean", 1), ("language", 1), ("quality", 1),
                                                             ("chunk", 1)]
    assert applied[0]["rows_changed"] == 1 and applied[1]["rows_removed"] == 1 and applied[1]["languages"]["de"] == 1
    assert sum(applied[2]["score_histogram"]) == 2 and applied[3]["rows_added"] == version["rows"] - 2
    kept = [row["text"] for row in client.get(f"/v1/datasets/{version['id']}/preview?limit=50").json()["data"]]
    assert kept[0] == "The café menu offers coffee\n\nand cake to every guest."
    assert len(kept) > 3 and all(text.startswith("Chapter") and text.endswith(".") and text in story
                                 for text in kept[1:])


def test_chunk_of_chat_rows_is_400_naming_the_operation(base_model):
    user = make_user()
    parent = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare", {"operations": [
        {"op": "chunk", "model": "tiny-llama", "max_tokens": 64}]}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "operations[0].op"
    assert "convert the rows to text first" in response.json()["error"]["message"]
