"""Quality checks through the API: queued after a dataset is ready, again on request, stored on it."""

import pytest

from datasets_app import services
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db
ROWS = [{"prompt": "mail me at ann@example.com", "completion": "ok"}, {"prompt": "a b c d", "completion": "x"},
        {"prompt": "a b c d", "completion": "x"}]


def test_quality_is_queued_when_ready_and_stored(base_model, django_capture_on_commit_callbacks):
    user = make_user()
    with django_capture_on_commit_callbacks() as callbacks:
        dataset = make_dataset(user, rows=ROWS)
    assert len(callbacks) == 3  # quality, the page's token counts and the verdict for waiting jobs
    client = api_client(user)
    waiting = client.get(f"/v1/datasets/{dataset.id}/quality")
    assert waiting.status_code == 202 and waiting.json()["status"] == "computing"
    services.dataset_quality(dataset_id=dataset.id)  # what the task does
    body = client.get(f"/v1/datasets/{dataset.id}/quality").json()
    assert body["status"] == "ready" and body["pii"]["email"] == {"count": 1, "rows": [1]}
    assert body["exact_duplicates"]["examples"] == [[2, 3]]
    assert client.get(f"/v1/datasets/{dataset.id}").json()["quality"]["rows"] == 3


def test_quality_against_a_validation_file_reports_overlap(django_capture_on_commit_callbacks):
    user = make_user()
    train, validation = make_dataset(user, rows=ROWS), make_dataset(user, rows=ROWS[1:2])
    client = api_client(user)
    response = client.post(f"/v1/datasets/{train.id}/quality", {"validation_file": validation.id,
                                                                 "near_threshold": 0.9}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "computing"
    assert client.get(f"/v1/datasets/{train.id}/quality").status_code == 202
    services.dataset_quality(dataset_id=train.id, validation_id=validation.id, near_threshold=0.9)
    body = client.get(f"/v1/datasets/{train.id}/quality").json()
    assert body["validation_overlap"]["same_rows"] == 1 and body["options"]["near_threshold"] == 0.9


@pytest.mark.parametrize(("body", "param"), [({"near_threshold": 3}, "near_threshold"),
                                             ({"validation_file": "file-nope"}, "validation_file")])
def test_bad_quality_request_is_400(body, param):
    user = make_user()
    dataset = make_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{dataset.id}/quality", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_other_users_validation_file_is_not_found():
    alice_file = make_dataset(make_user())
    bob = make_user()
    dataset = make_dataset(bob)
    response = api_client(bob).post(f"/v1/datasets/{dataset.id}/quality", {"validation_file": alice_file.id},
                                    format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_not_found"


def test_a_crashed_check_is_failed_with_its_error_and_can_be_asked_again(django_capture_on_commit_callbacks):
    user = make_user()
    dataset = make_dataset(user, rows=ROWS)
    services.dataset_quality_fail(dataset_id=dataset.id, message="MemoryError: too big")
    client = api_client(user)
    body = client.get(f"/v1/datasets/{dataset.id}/quality").json()
    assert body["status"] == "failed" and body["error"] == "MemoryError: too big"
    with django_capture_on_commit_callbacks() as callbacks:
        again = client.post(f"/v1/datasets/{dataset.id}/quality", {}, format="json")
    assert again.status_code == 202 and again.json()["status"] == "computing" and len(callbacks) == 1
