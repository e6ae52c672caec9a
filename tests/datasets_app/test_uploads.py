"""Resumable chunked uploads under /v1/datasets/uploads, and the /v1/datasets extras."""

import hashlib
import json

import pytest
from rest_framework.test import APIClient

from datasets_app import services
from datasets_app.models import Dataset, DatasetUpload
from tests.api import api_client
from tests.factories import file_like, jsonl_bytes, make_dataset, make_user
from workers.sample_data import classification_rows

pytestmark = pytest.mark.django_db
CONTENT = jsonl_bytes(classification_rows(40))


def _create(client, **body):
    return client.post("/v1/datasets/uploads", {"filename": "train.jsonl", **body}, format="json")


def _put(client, upload_id: str, offset: int, data: bytes, **headers):
    return client.put(f"/v1/datasets/uploads/{upload_id}/chunk?offset={offset}", data=data,
                      content_type="application/octet-stream", **headers)


def test_chunked_upload_survives_a_broken_connection_and_resumes(django_capture_on_commit_callbacks):
    client = api_client(make_user())
    upload = _create(client, bytes=len(CONTENT)).json()
    assert (upload["status"], upload["offset"]) == ("open", 0)
    first, rest = CONTENT[:1000], CONTENT[1000:]
    assert _put(client, upload["id"], 0, first).json()["offset"] == 1000
    # the client lost its connection: it asks where the upload stands and goes on from there
    assert client.get(f"/v1/datasets/uploads/{upload['id']}").json()["offset"] == 1000
    stale = _put(client, upload["id"], 0, first)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "offset_mismatch"
    assert "from offset 1000" in stale.json()["error"]["message"]
    assert _put(client, upload["id"], 1000, rest).json()["offset"] == len(CONTENT)
    with django_capture_on_commit_callbacks() as callbacks:
        done = client.post(f"/v1/datasets/uploads/{upload['id']}/complete",
                           {"sha256": hashlib.sha256(CONTENT).hexdigest()}, format="json").json()
    assert done["status"] == "completed" and done["dataset"]["status"] == "uploaded" and callbacks
    dataset = Dataset.objects.get(pk=done["dataset"]["id"])
    assert dataset.file.read() == CONTENT and dataset.sha256 == hashlib.sha256(CONTENT).hexdigest()
    services.dataset_validate(dataset_id=dataset.id)  # what the queued task does
    body = client.get(f"/v1/datasets/{dataset.id}").json()
    assert (body["status"], body["rows"], body["report"]["ok"]) == ("ready", 40, True)


def test_same_content_is_recognised_before_any_byte_is_sent():
    user = make_user()
    existing = make_dataset(user, rows=classification_rows(40))
    body = _create(api_client(user), sha256=hashlib.sha256(CONTENT).hexdigest()).json()
    assert body["status"] == "completed" and body["duplicate"] and body["dataset"]["id"] == existing.id
    other = _create(api_client(make_user()), sha256=hashlib.sha256(CONTENT).hexdigest()).json()
    assert other["status"] == "open"  # another user's identical file is not yours


def test_corrupt_chunk_is_dropped_and_can_be_sent_again():
    client = api_client(make_user())
    upload = _create(client).json()
    _put(client, upload["id"], 0, CONTENT[:500])
    bad = _put(client, upload["id"], 500, CONTENT[500:900], HTTP_X_CHUNK_SHA256="0" * 64)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "chunk_corrupt"
    assert client.get(f"/v1/datasets/uploads/{upload['id']}").json()["offset"] == 500
    good = _put(client, upload["id"], 500, CONTENT[500:900],
                HTTP_X_CHUNK_SHA256=hashlib.sha256(CONTENT[500:900]).hexdigest())
    assert good.json()["offset"] == 900


def test_chunk_past_the_announced_size_is_refused():
    client = api_client(make_user())
    upload = _create(client, bytes=10).json()
    response = _put(client, upload["id"], 0, b"x" * 11)
    assert response.status_code == 400 and response.json()["error"]["code"] == "chunk_too_large"
    assert DatasetUpload.objects.get(pk=upload["id"]).received == 0


def test_complete_checks_size_and_sha256_and_stores_nothing_on_mismatch():
    client = api_client(make_user())
    upload = _create(client, bytes=len(CONTENT)).json()
    _put(client, upload["id"], 0, CONTENT[:100])
    short = client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json")
    assert short.status_code == 400 and short.json()["error"]["code"] == "upload_incomplete"
    _put(client, upload["id"], 100, CONTENT[100:])
    wrong = client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {"sha256": "a" * 64}, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "sha256_mismatch"
    assert not Dataset.objects.exists()


def test_empty_upload_cannot_complete_and_cancel_frees_it():
    client = api_client(make_user())
    upload = _create(client).json()
    empty = client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json")
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty_file"
    assert client.delete(f"/v1/datasets/uploads/{upload['id']}").json()["status"] == "cancelled"
    assert _put(client, upload["id"], 0, b"x").status_code == 409


@pytest.mark.parametrize(("body", "param"), [
    ({"filename": "x.exe"}, "file"),
    ({"format": "nope"}, "format"),
    ({"container": "rar"}, "container"),
    ({"column_map": "nonsense"}, "column_map"),
    ({"sha256": "xyz"}, "sha256"),
    ({"purpose": "batch"}, "purpose"),
])
def test_bad_upload_request_is_400_naming_the_param(body, param):
    response = _create(api_client(make_user()), **body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_chunk_larger_than_the_request_body_limit_streams_to_disk(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < 12 << 20
    client = api_client(make_user())
    upload = _create(client).json()
    assert _put(client, upload["id"], 0, b"x" * (12 << 20)).json()["offset"] == 12 << 20


def test_empty_chunk_is_400():
    client = api_client(make_user())
    upload = _create(client).json()
    response = _put(client, upload["id"], 0, b"")
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty_chunk"


def test_chunk_without_offset_is_400():
    client = api_client(make_user())
    upload = _create(client).json()
    response = client.put(f"/v1/datasets/uploads/{upload['id']}/chunk", data=b"x",
                          content_type="application/octet-stream")
    assert response.status_code == 400 and response.json()["error"]["param"] == "offset"


def test_other_users_upload_is_404():
    upload = _create(api_client(make_user())).json()
    bob = api_client(make_user())
    for response in (bob.get(f"/v1/datasets/uploads/{upload['id']}"), _put(bob, upload["id"], 0, b"x"),
                     bob.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json"),
                     bob.delete(f"/v1/datasets/uploads/{upload['id']}")):
        assert response.status_code == 404
    assert DatasetUpload.objects.get(pk=upload["id"]).received == 0


# --- /v1/files options and /v1/datasets extras -----------------------------------------------------

def test_files_api_takes_format_container_and_column_map():
    client = api_client(make_user())
    content = b"question\tanswer\nWhat?\tThat.\n"
    body = client.post("/v1/files", {"file": file_like(content, "qa.txt"), "purpose": "fine-tune",
                                     "container": "tsv", "column_map": "question→prompt,answer→completion"},
                       format="multipart").json()
    assert (body["status"], body["format"], body["container"]) == ("processed", "prompt_completion", "tsv")


def test_report_preview_and_versions():
    user = make_user()
    dataset = make_dataset(user, rows=classification_rows(30))
    client = api_client(user)
    report = client.get(f"/v1/datasets/{dataset.id}/report").json()
    assert report["ok"] and report["rows"] == 30 and report["errors"] == [] and report["format"] == "chat"
    page = client.get(f"/v1/datasets/{dataset.id}/preview?offset=25&limit=10").json()
    assert len(page["data"]) == 5 and not page["has_more"] and page["total"] == 30
    assert page["data"][0] == classification_rows(30)[25]
    assert client.get(f"/v1/datasets/{dataset.id}/preview?limit=1000").status_code == 400
    versions = client.get(f"/v1/datasets/{dataset.id}/versions").json()["data"]
    assert [v["id"] for v in versions] == [dataset.id]


def test_invalid_file_shows_error_status_and_report(settings):
    settings.DATASET_INLINE_BYTES = 0
    user = make_user()
    client = api_client(user)
    chat = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    content = jsonl_bytes([chat, {"messages": [{"role": "user", "content": "x"}]}])
    body = client.post("/v1/files", {"file": file_like(content, "t.jsonl"), "purpose": "fine-tune"},
                       format="multipart").json()
    assert body["status"] == "uploaded"
    services.dataset_validate(dataset_id=body["id"])
    file = client.get(f"/v1/files/{body['id']}").json()
    assert file["status"] == "error" and "line 2, messages: has no assistant turn" in file["status_details"]
    report = client.get(f"/v1/datasets/{body['id']}/report").json()
    assert report["errors"][0]["kind"] == "no_assistant_turn" and report["errors"][0]["examples"][0]["line"] == 2
    again = client.post(f"/v1/datasets/{body['id']}/validate", {"format": "text"}, format="json")
    assert again.status_code == 200 and again.json()["status"] == "uploaded"


def test_revalidating_a_ready_dataset_is_409():
    user = make_user()
    dataset = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{dataset.id}/validate", {}, format="json")
    assert response.status_code == 409


def test_bad_upload_error_message_is_json_for_a_zip_slip():
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../x.jsonl", jsonl_bytes(classification_rows(2)))
    response = api_client(make_user()).post("/v1/files", {"file": file_like(buffer.getvalue(), "t.zip"),
                                                          "purpose": "fine-tune"}, format="multipart")
    assert response.status_code == 400 and "unsafe path" in json.loads(response.content)["error"]["message"]


# --- sha256 on the way in ------------------------------------------------------------------------

def test_sha256_is_computed_as_chunks_arrive_and_resumes_across_requests(django_capture_on_commit_callbacks):
    from rehashes import PySha256

    client = api_client(make_user())
    upload = _create(client).json()  # no sha256 announced: the server computes it
    cuts = [0, 700, 1500, 2600, len(CONTENT)]
    for start, end in zip(cuts[:2], cuts[1:3], strict=True):
        assert _put(client, upload["id"], start, CONTENT[start:end]).json()["offset"] == end
    # the state between requests lives on the row (any web process can take the next chunk)
    state = bytes(DatasetUpload.objects.get(pk=upload["id"]).hash_state)
    assert PySha256.deserialize(state).finalize() == hashlib.sha256(CONTENT[:1500]).hexdigest()
    resumed = APIClient()  # a fresh client and request, as after a restart: nothing kept in memory
    resumed.credentials(HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"])
    for start, end in zip(cuts[2:-1], cuts[3:], strict=True):
        assert _put(resumed, upload["id"], start, CONTENT[start:end]).json()["offset"] == end
    with django_capture_on_commit_callbacks():
        done = resumed.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json").json()
    assert done["dataset"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()


def test_complete_uses_the_hash_taken_on_the_way_in_without_reading_the_file_again():
    client = api_client(make_user())
    upload = _create(client).json()
    _put(client, upload["id"], 0, CONTENT)
    # a byte flipped on disk after it was received is not seen: the hash is of what arrived
    part = services.uploads._part_path(DatasetUpload.objects.get(pk=upload["id"]))
    part.write_bytes(b"X" + part.read_bytes()[1:])
    done = client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json").json()
    assert done["dataset"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()


@pytest.mark.parametrize("offset", [2000, 400])  # ahead of the received bytes, or overlapping them
def test_out_of_order_chunk_is_409_naming_the_expected_offset(offset):
    client = api_client(make_user())
    upload = _create(client).json()
    _put(client, upload["id"], 0, CONTENT[:1000])
    response = _put(client, upload["id"], offset, CONTENT[offset:offset + 500])
    error = response.json()["error"]
    assert response.status_code == 409 and (error["param"], error["code"]) == ("offset", "offset_mismatch")
    assert "in order" in error["message"] and "from offset 1000" in error["message"]
    assert DatasetUpload.objects.get(pk=upload["id"]).received == 1000
    rest = _put(client, upload["id"], 1000, CONTENT[1000:]).json()
    done = client.post(f"/v1/datasets/uploads/{rest['id']}/complete", {}, format="json").json()
    assert done["dataset"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()


def test_same_content_uploaded_twice_in_chunks_is_recognised():
    client = api_client(make_user())
    ids = []
    for _ in range(2):
        upload = _create(client).json()
        _put(client, upload["id"], 0, CONTENT[:999])
        _put(client, upload["id"], 999, CONTENT[999:])
        ids.append(client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json")
                   .json()["dataset"]["id"])
    assert client.get(f"/v1/files/{ids[1]}").json()["duplicate_of"] == ids[0]


def test_upload_opened_before_hashes_were_kept_catches_up_from_its_part_file():
    client = api_client(make_user())
    upload = _create(client).json()
    _put(client, upload["id"], 0, CONTENT[:1000])
    DatasetUpload.objects.filter(pk=upload["id"]).update(hash_state=b"")  # as a row from before the upgrade
    _put(client, upload["id"], 1000, CONTENT[1000:])
    done = client.post(f"/v1/datasets/uploads/{upload['id']}/complete", {}, format="json").json()
    assert done["dataset"]["sha256"] == hashlib.sha256(CONTENT).hexdigest()


def test_api_refuses_a_txt_file_without_format_text_and_says_how(settings):
    client = api_client(make_user())
    prose = b"Once upon a time.\nThe end.\n"
    refused = client.post("/v1/files", {"file": file_like(prose, "story.txt"), "purpose": "fine-tune"},
                          format="multipart")
    error = refused.json()["error"]
    assert refused.status_code == 400 and (error["param"], error["code"]) == ("format", "text_format_unconfirmed")
    assert "story.txt is plain text" in error["message"] and "format=text" in error["message"]
    taken = client.post("/v1/files", {"file": file_like(prose, "story.txt"), "purpose": "fine-tune", "format": "text"},
                        format="multipart")
    assert taken.status_code == 200 and (taken.json()["format"], taken.json()["rows"]) == ("text", 2)
    resumable = client.post("/v1/datasets/uploads", {"filename": "story.txt.gz", "bytes": 10}, format="json")
    assert resumable.status_code == 400 and resumable.json()["error"]["code"] == "text_format_unconfirmed"


def test_a_zip_holding_plain_text_needs_format_text_too(settings):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("corpus.txt", "A line of prose.\nAnother.\n")
    client = api_client(make_user())
    refused = client.post("/v1/files", {"file": file_like(buffer.getvalue(), "corpus.zip"), "purpose": "fine-tune"},
                          format="multipart")
    assert refused.status_code == 400 and "plain text" in refused.json()["error"]["message"]
    settings.DATASET_INLINE_BYTES = 0  # checked by a worker: the dataset turns invalid with the same reason
    stored = client.post("/v1/files", {"file": file_like(buffer.getvalue(), "corpus.zip"), "purpose": "fine-tune"},
                         format="multipart").json()
    services.dataset_validate(dataset_id=stored["id"])
    dataset = Dataset.objects.get(pk=stored["id"])
    assert dataset.status == "invalid"
    assert dataset.validation_report["errors"][0]["kind"] == "text_format_unconfirmed"
