"""Uploading training files: good ones are stored, bad ones get a 400 that says where and why."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from datasets_app.models import Dataset
from tests.api import api_client
from tests.factories import file_like, jsonl_bytes, make_dataset, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db


def _upload(client, content: bytes, name: str = "train.jsonl", purpose: str = "fine-tune"):
    return client.post("/v1/files", {"file": file_like(content, name), "purpose": purpose}, format="multipart")


def _stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_returns_openai_file_object():
    client = api_client(make_user())
    content = jsonl_bytes(classification_rows(8))
    body = _upload(client, content).json()
    assert body["object"] == "file" and body["id"].startswith("file-")
    assert (body["status"], body["purpose"], body["filename"]) == ("processed", "fine-tune", "train.jsonl")
    assert body["bytes"] == len(content) and body["rows"] == 8 and body["format"] == "chat"
    dataset = Dataset.objects.get(pk=body["id"])
    assert dataset.file.read() == content and len(dataset.sha256) == 64


GOOD = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
NO_ASSISTANT = json.dumps({"messages": [{"role": "user", "content": "a"}]})


@pytest.mark.parametrize(("content", "name", "expected"), [
    (b"", "train.jsonl", "train.jsonl: the file is empty"),
    ((GOOD + "\n").encode() + b"\xff\xfe\n", "train.jsonl", "train.jsonl, line 2: not valid UTF-8"),
    ((GOOD + "\n" + GOOD + "\n{oops\n").encode(), "train.jsonl", "train.jsonl, line 3: invalid JSON"),
    ((GOOD + "\n" + NO_ASSISTANT + "\n").encode(), "train.jsonl",
     "train.jsonl, line 2, messages: has no assistant turn"),
    ((GOOD + "\n").encode(), "train.csv", "train.csv: named .csv but the content looks like JSONL"),
    ((GOOD + "\n").encode(), "train.pdf", "train.pdf: not a training file type we read"),
    ((GOOD + "\n").encode(), ".jsonl", ".jsonl: the name is only an extension; put a name before it, e.g. "
     "train.jsonl"),
])
def test_bad_upload_is_400_naming_file_and_line_and_stores_nothing(content, name, expected):
    client = api_client(make_user())
    kept = make_dataset()  # something already stored must survive
    before = _stored_files()
    response = _upload(client, content, name)
    assert response.status_code == 400
    error = response.json()["error"]
    assert expected in error["message"] and error["param"] == "file"
    assert list(Dataset.objects.all()) == [kept] and _stored_files() == before


def test_upload_of_millions_of_bad_rows_stops_checking_at_the_first_hundred():
    """The inline check holds the web request: a file of only bad rows is not read to its end."""
    client = api_client(make_user())
    response = _upload(client, (GOOD + "\n").encode() + b"{}\n" * 200_000)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("train.jsonl, line 2:")
    assert "at least 80 more problems: the check stopped before line 102 after 100 errors" in message
    assert not Dataset.objects.exists()


def test_unknown_purpose_is_400():
    response = _upload(api_client(make_user()), (GOOD + "\n").encode(), purpose="batch")
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"


def test_missing_file_field_is_400_not_500():
    response = api_client(make_user()).post("/v1/files", {"purpose": "fine-tune"}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"


def test_list_pages_newest_first():
    user = make_user()
    ids = [make_dataset(user).id for _ in range(3)]
    client = api_client(user)
    first = client.get("/v1/files?limit=2").json()
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"]
    rest = client.get(f"/v1/files?limit=2&after={first['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and not rest["has_more"]


def test_list_pages_oldest_first_with_order_asc_and_filters_by_purpose():
    user = make_user()
    ids = [make_dataset(user).id for _ in range(3)]
    client = api_client(user)
    first = client.get("/v1/files?limit=2&order=asc").json()
    assert [f["id"] for f in first["data"]] == ids[:2] and first["has_more"]
    rest = client.get(f"/v1/files?limit=2&order=asc&after={first['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == [ids[2]] and not rest["has_more"]
    assert client.get("/v1/files?purpose=fine-tune-results").json()["data"] == []


def test_list_order_other_than_asc_or_desc_is_a_400_naming_order():
    response = api_client(make_user()).get("/v1/files?order=sideways")
    assert response.status_code == 400 and response.json()["error"]["param"] == "order"


def test_content_returns_the_uploaded_bytes():
    user = make_user()
    dataset = make_dataset(user)
    response = api_client(user).get(f"/v1/files/{dataset.id}/content")
    assert b"".join(response.streaming_content) == Path(dataset.file.path).read_bytes()


def test_content_is_served_to_the_openai_clients_accept_header():
    """``client.files.content`` asks for ``application/binary``: the bytes come, not a 406."""
    user = make_user()
    dataset = make_dataset(user)
    response = api_client(user).get(f"/v1/files/{dataset.id}/content", HTTP_ACCEPT="application/binary")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == Path(dataset.file.path).read_bytes()


def test_delete_removes_row_and_file(django_capture_on_commit_callbacks):
    user = make_user()
    dataset = make_dataset(user)
    path = Path(dataset.file.path)
    with django_capture_on_commit_callbacks(execute=True):
        body = api_client(user).delete(f"/v1/files/{dataset.id}").json()
    assert body == {"object": "file", "id": dataset.id, "deleted": True}
    assert not Dataset.objects.exists() and not path.exists()


def test_delete_of_file_used_by_a_job_is_refused_and_keeps_it(base_model):
    from tests.factories import make_job

    job = make_job()
    response = api_client(job.owner).delete(f"/v1/files/{job.dataset_id}")
    assert response.status_code == 409 and job.id in response.json()["error"]["message"]
    assert Path(Dataset.objects.get(pk=job.dataset_id).file.path).exists()


def test_unauthenticated_request_is_401():
    response = api_client(make_user()).__class__().get("/v1/files")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
