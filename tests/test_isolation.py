"""Another user's objects do not exist for you: 404 everywhere, 400 when named in a request."""

import pytest

from datasets_app.models import Dataset
from jobs_app.models import FineTuneJob
from models_app.models import FineTunedModel
from models_app.services import fine_tuned_model_create
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_objects(base_model, tmp_path):
    alice = make_user("alice")
    job = make_job(alice)
    (tmp_path / "adapter_config.json").write_text("{}")
    model = fine_tuned_model_create(job=job, adapter_dir=tmp_path)
    return {"file": job.dataset_id, "job": job.id, "model": model.id}


# Every API endpoint that names one object; tests/test_projects.py walks them too.
OBJECT_URLS = [
    ("get", "/v1/files/{file}"),
    ("get", "/v1/files/{file}/content"),
    ("delete", "/v1/files/{file}"),
    ("get", "/v1/datasets/{file}"),
    ("get", "/v1/datasets/{file}/report"),
    ("get", "/v1/datasets/{file}/preview"),
    ("get", "/v1/datasets/{file}/versions"),
    ("get", "/v1/datasets/{file}/stats"),
    ("get", "/v1/datasets/{file}/quality"),
    ("post", "/v1/datasets/{file}/quality"),
    ("post", "/v1/datasets/{file}/prepare"),
    ("get", "/v1/datasets/{file}/dry-run"),
    ("post", "/v1/datasets/{file}/validate"),
    ("get", "/v1/fine_tuning/jobs/{job}"),
    ("post", "/v1/fine_tuning/jobs/{job}/cancel"),
    ("get", "/v1/fine_tuning/jobs/{job}/events"),
    ("get", "/v1/fine_tuning/jobs/{job}/checkpoints"),
    ("get", "/v1/models/{model}"),
    ("get", "/v1/models/{model}/download?artifact=adapter"),
    ("delete", "/v1/models/{model}"),
]


@pytest.mark.parametrize(("method", "url"), OBJECT_URLS)
def test_other_users_object_is_404(alice_objects, method, url):
    bob = api_client(make_user("bob"))
    response = getattr(bob, method)(url.format(**alice_objects))
    assert response.status_code == 404, (url, response.content)
    assert response.json()["error"]["code"] == "not_found"
    assert Dataset.objects.filter(pk=alice_objects["file"]).exists()
    assert FineTuneJob.objects.get(pk=alice_objects["job"]).status == FineTuneJob.Status.VALIDATING_FILES
    assert FineTunedModel.objects.filter(pk=alice_objects["model"]).exists()


def test_lists_show_only_your_objects(alice_objects):
    bob = make_user("bob")
    own = make_dataset(bob)
    client = api_client(bob)
    assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [own.id]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []
    model_ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert "tiny-llama" in model_ids and alice_objects["model"] not in model_ids


@pytest.mark.parametrize("field", ["training_file", "validation_file"])
def test_job_naming_other_users_file_is_400_and_no_job(alice_objects, field):
    bob = make_user("bob")
    body = {"model": "tiny-llama", "training_file": make_dataset(bob).id, field: alice_objects["file"]}
    response = api_client(bob).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == {"message": f"No such file: {alice_objects['file']}",
                                        "type": "invalid_request_error", "param": field,
                                        "code": "file_not_found"}
    assert not FineTuneJob.objects.filter(owner=bob).exists()


def test_owner_sees_own_objects(alice_objects):
    alice = api_client(FineTuneJob.objects.get(pk=alice_objects["job"]).owner)
    assert alice.get(f"/v1/fine_tuning/jobs/{alice_objects['job']}").status_code == 200
    response = alice.get(f"/v1/models/{alice_objects['model']}/download?artifact=adapter")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"


@pytest.mark.parametrize("url", ["/datasets/{file}/", "/datasets/{file}/thumbnails/0.jpg", "/v1/datasets/{file}/report",
                                 "/v1/files/{file}/content"])
def test_other_users_vision_dataset_and_its_thumbnails_are_404(client, url):
    from tests.factories import make_vision_dataset

    alice = make_vision_dataset(make_user("alice"))
    client.force_login(make_user("bob"))
    assert client.get(url.format(file=alice.id)).status_code == 404
    client.force_login(alice.owner)
    assert client.get(url.format(file=alice.id)).status_code == 200
