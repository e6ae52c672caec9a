"""Vision datasets: an image archive uploaded with purpose=vision, checked by the task, reported on its
page (class chart, thumbnails, problems with paths), split into a stratified version."""

import json

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from datasets_app import services
from datasets_app.models import Dataset
from finetune_site.errors import InvalidRequest
from jobs_app.services import job_create
from models_app.base_models.services import base_model_builtin_ensure
from tests.api import api_client
from tests.factories import archive_bytes, image_bytes, image_set, make_user, make_vision_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(client):
    user = make_user()
    client.force_login(user)
    return user


def _manifest(dataset: Dataset) -> list[dict]:
    with default_storage.open(dataset.training_file.name, "rb") as handle:
        return [json.loads(line) for line in handle]


def test_upload_through_the_files_api_is_checked_by_the_task_and_ready(django_capture_on_commit_callbacks):
    user = make_user()
    client = api_client(user)
    with django_capture_on_commit_callbacks() as queued:
        body = client.post("/v1/files", {"purpose": "vision", "file": SimpleUploadedFile(
            "photos.zip", archive_bytes(image_set()), content_type="application/zip")}, format="multipart").json()
    assert (body["purpose"], body["dataset_status"], body["filename"]) == ("vision", "uploaded", "photos.zip")
    assert queued  # the dataset_validate task
    services.dataset_validate(dataset_id=body["id"])  # what the task does
    dataset = client.get(f"/v1/datasets/{body['id']}").json()
    assert (dataset["status"], dataset["rows"], dataset["format"]) == ("ready", 30, "image_classification")
    assert {c["label"]: c["count"] for c in dataset["stats"]["classes"]} == {"birds": 8, "cats": 12, "dogs": 10}
    thumbnails = dataset["stats"]["thumbnails"]
    assert len(thumbnails) == 24 and all(default_storage.exists(t["name"]) for t in thumbnails)
    preview = client.get(f"/v1/datasets/{body['id']}/preview?limit=2").json()
    assert preview["total"] == 30 and preview["data"][0] == {"image": "cats/000.png", "label": "cats"}


def test_a_vision_upload_must_be_an_archive():
    with pytest.raises(InvalidRequest, match="upload a .zip, .tar, .tar.gz or .tgz of class folders"):
        services.dataset_upload(owner=make_user(), upload=SimpleUploadedFile("cat.png", image_bytes()),
                                purpose="vision")


def test_page_shows_class_chart_thumbnails_and_no_problems(client, user):
    dataset = make_vision_dataset(user)
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert 'id="class-chart"' in body and '<g class="class-bar" data-label="cats" data-count="12">' in body
    assert body.count('<div class="thumb-class"') == 3 and body.count("<img src=") == 24
    assert 'id="no-problems"' in body and "Fine-tune on this dataset" not in body
    thumbnail = client.get(reverse("datasets:thumbnail", args=[dataset.id, 0]))
    assert thumbnail["Content-Type"] == "image/jpeg" and b"".join(thumbnail.streaming_content)[:2] == b"\xff\xd8"
    assert client.get(reverse("datasets:thumbnail", args=[dataset.id, 24])).status_code == 404


def test_a_corrupt_image_is_reported_with_its_path_on_the_page_and_the_api(client, user):
    files = image_set()
    files["cats/broken.jpg"] = image_bytes("cats", 99, fmt="JPEG")[:200]
    files["dogs/readme.txt"] = b"not a picture"
    dataset = make_vision_dataset(user, files=files)
    assert dataset.status == "invalid" and dataset.row_count == 0
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "<code>cats/broken.jpg</code>: not a readable image: truncated or damaged" in body
    assert "<code>dogs/readme.txt</code>: not an image (a .txt file)" in body
    api = api_client(user).get(f"/v1/files/{dataset.id}").json()
    assert api["status"] == "error"
    assert "images.zip, cats/broken.jpg: not a readable image" in api["status_details"]


def test_a_wrong_layout_is_reported_with_the_paths(client, user):
    dataset = make_vision_dataset(user, files={f"{i}.png": image_bytes("cats", i) for i in range(3)})
    assert dataset.status == "invalid"
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "<code>0.png</code>: at the top of the archive, not in a class folder" in body


def test_a_one_class_dataset_is_reported_with_its_folder(client, user):
    dataset = make_vision_dataset(user, files=image_set({"cats": 5}, root="pets/"))
    assert dataset.status == "invalid"
    assert "images.zip, pets/cats/: every image is of one class, 'cats'" in dataset.validation_report["summary"]
    body = client.get(reverse("datasets:detail", args=[dataset.id])).content.decode()
    assert "<code>pets/cats/</code>: every image is of one class" in body


def test_a_labels_csv_missing_a_column_is_reported_with_file_and_line():
    files = {f"img/{i}.png": image_bytes("cats", i) for i in range(4)}
    files["labels.csv"] = b"image\n" + b"".join(f"img/{i}.png\n".encode() for i in range(4))
    dataset = make_vision_dataset(files=files)
    assert dataset.status == "invalid"
    assert "images.zip, line 1, labels.csv: no label (or class) column (it has: image)" in \
        dataset.validation_report["summary"]


def test_split_makes_a_stratified_version_checked_again(django_capture_on_commit_callbacks):
    user = make_user()
    parent = make_vision_dataset(user, files=image_set({"cats": 20, "dogs": 10, "birds": 5}))
    with django_capture_on_commit_callbacks(execute=False):
        response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare", {"operations": [
            {"op": "split", "validation_share": 0.2, "seed": 7}]}, format="json")
    assert response.status_code == 200, response.content
    version = Dataset.objects.get(parent=parent)
    assert (version.filename, version.status, version.purpose) == ("images.v2.zip", "uploaded", "vision")
    services.dataset_validate(dataset_id=version.id)
    version.refresh_from_db()
    assert version.status == "ready" and version.stats["split"]["validation"] == 7
    rows = _manifest(version)
    for label, (train, validation) in {"cats": (16, 4), "dogs": (8, 2), "birds": (4, 1)}.items():
        parts = [r["split"] for r in rows if r["label"] == label]
        assert (parts.count("train"), parts.count("validation")) == (train, validation)
    assert version.file.name != parent.file.name and version.file.read() == parent.file.read()


def test_upload_page_takes_an_image_archive(client, user):
    response = client.post(reverse("datasets:upload"), {"purpose": "vision", "file": SimpleUploadedFile(
        "pets.tar", archive_bytes(image_set({"cats": 2, "dogs": 2}), "tar"))})
    dataset = Dataset.objects.get(owner=user)
    assert response["Location"] == reverse("datasets:detail", args=[dataset.id])
    assert (dataset.purpose, dataset.status) == ("vision", "uploaded")
    refused = client.post(reverse("datasets:upload"), {"purpose": "vision", "file": SimpleUploadedFile(
        "cat.png", image_bytes())})
    assert refused.status_code == 400 and "upload a .zip, .tar, .tar.gz or .tgz" in refused.content.decode()
    assert 'id="upload-vision" checked' in refused.content.decode()


def test_split_of_a_vision_dataset_takes_only_a_split(user):
    parent = make_vision_dataset(user)
    response = api_client(user).post(f"/v1/datasets/{parent.id}/prepare", {"operations": [{"op": "dedup"}]},
                                     format="json")
    assert response.status_code == 400 and "one operation" in response.json()["error"]["message"]


def test_split_form_on_the_page_makes_the_version(client, user):
    parent = make_vision_dataset(user)
    response = client.post(reverse("datasets:prepare", args=[parent.id]), {"validation_share": "0.25", "seed": "1"})
    version = Dataset.objects.get(parent=parent)
    assert response["Location"] == reverse("datasets:detail", args=[version.id])
    assert version.operations[0]["validation_share"] == 0.25
    bad = client.post(reverse("datasets:prepare", args=[parent.id]), {"validation_share": "0.9", "seed": "1"})
    assert bad.status_code == 400 and Dataset.objects.filter(parent=parent).count() == 1


def test_deleting_a_vision_dataset_removes_its_thumbnails(user, django_capture_on_commit_callbacks):
    dataset = make_vision_dataset(user)
    names = [t["name"] for t in dataset.stats["thumbnails"]]
    with django_capture_on_commit_callbacks(execute=True):
        services.dataset_delete(dataset=dataset)
    assert names and not any(default_storage.exists(name) for name in names)


def test_text_checks_are_refused_for_a_vision_dataset(user):
    dataset = make_vision_dataset(user)
    client = api_client(user)
    quality = client.post(f"/v1/datasets/{dataset.id}/quality", {}, format="json")
    assert quality.status_code == 400 and "vision dataset" in quality.json()["error"]["message"]
    assert client.get(f"/v1/datasets/{dataset.id}/stats?model=tiny-llama").status_code in (400, 409)


def test_jobs_refuse_a_vision_dataset_and_the_wizard_does_not_offer_it(client, user):
    base_model_builtin_ensure()
    dataset = make_vision_dataset(user)
    with pytest.raises(InvalidRequest, match="is a vision dataset"):
        job_create(owner=user, training_file=dataset.id, model="tiny-llama", hyperparameters={})
    assert dataset.id not in client.get(reverse("jobs:wizard_dataset")).content.decode()
