"""Vision end to end on the real Celery worker: a ZIP of generated shapes is checked by the worker, a
native job trains on it through the job lifecycle (queued, running, a metrics event per epoch with loss
and accuracy), the classifier becomes a model version with its evaluation, and
POST /v1/images/classifications ranks an image's classes; a running vision job cancels."""

import time

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.e2e import client_for, wait_finished, wait_for
from tests.factories import archive_bytes
from workers.sample_data import shape_image, shape_set

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
CLASSES = ["circles", "squares", "triangles"]


def _api(client) -> requests.Session:
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {client.api_key}"
    return api


def _ready_dataset(live_server, api, per_class: int) -> str:
    uploaded = api.post(
        live_server.url + "/v1/files",
        data={"purpose": "vision"},
        files={"file": ("shapes.zip", archive_bytes(shape_set(per_class)), "application/zip")},
    )
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    wait_for(
        lambda: api.get(f"{live_server.url}/v1/datasets/{file_id}").json()["status"] == "ready",
        timeout=120,
        what="the worker to check the images",
    )
    return file_id


def _create(live_server, api, file_id: str, **hyperparameters) -> dict:
    response = api.post(
        live_server.url + "/v1/fine_tuning/jobs",
        json={
            "model": "cnn",
            "training_file": file_id,
            "suffix": "shapes",
            "method": {"type": "vision", "vision": {"hyperparameters": hyperparameters}},
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_zip_of_images_becomes_a_classifier_that_answers(live_server, live_base_model, worker, inference_worker):
    client, _ = client_for(live_server)
    api = _api(client)
    file_id = _ready_dataset(live_server, api, per_class=40)
    job = _create(live_server, api, file_id, strategy="auto", n_epochs=6, width=16, batch_size=16)
    assert job["method"]["vision"]["hyperparameters"]["strategy"] == "native"
    finished = wait_finished(client, job["id"], timeout=400)
    assert finished.status == "succeeded", finished.error

    body = api.get(f"{live_server.url}/v1/fine_tuning/jobs/{job['id']}").json()
    vision = body["vision"]
    assert vision["strategy"] == "native" and vision["design"]["parameters"] > 0
    evaluation = vision["evaluation"]
    assert evaluation["classes"] == CLASSES and len(evaluation["confusion_matrix"]) == 3
    assert {c["label"] for c in evaluation["per_class"]} == set(CLASSES)
    events = api.get(f"{live_server.url}/v1/fine_tuning/jobs/{job['id']}/events?limit=100").json()["data"]
    epochs = [e["data"] for e in events if e.get("type") == "metrics"]
    assert sorted(e["epoch"] for e in epochs) == list(range(1, vision["epochs"] + 1))
    assert all({"train_loss", "valid_loss", "train_accuracy", "valid_accuracy"} <= set(e) for e in epochs)

    model = body["fine_tuned_model"]
    assert model
    answer = api.post(
        f"{live_server.url}/v1/images/classifications",
        data={"model": model},
        files={"image": ("q.png", shape_image("circle", 5000), "image/png")},
    )
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert sorted(p["label"] for p in predictions) == CLASSES
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-3
    by_name = api.post(
        f"{live_server.url}/v1/images/classifications",
        data={"model": "shapes@v1", "top": 1},
        files={"image": ("q.png", shape_image("circle", 5000), "image/png")},
    ).json()
    assert by_name["predictions"] == predictions[:1]
    refused = api.post(
        f"{live_server.url}/v1/images/classifications",
        data={"model": model},
        files={"image": ("q.png", b"not an image", "image/png")},
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "image"


def test_a_running_vision_job_cancels(live_server, live_base_model, worker):
    client, _ = client_for(live_server)
    api = _api(client)
    file_id = _ready_dataset(live_server, api, per_class=20)
    job = _create(live_server, api, file_id, strategy="native", n_epochs=100, early_stopping_patience=0, width=8)
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job["id"]).status == "running", timeout=120, what="the job to start"
    )
    time.sleep(1)
    assert client.fine_tuning.jobs.cancel(job["id"]).status == "cancelled"
    final = wait_finished(client, job["id"], timeout=60)
    assert final.status == "cancelled" and not final.fine_tuned_model


def test_a_transfer_job_fine_tunes_a_registered_backbone_on_the_worker(live_server, live_base_model, worker,
                                                                          inference_worker, tmp_path, client):
    """A backbone pretrained here on another task (the colour of a disc), registered as a base model, is
    fine-tuned through the real worker to classify shapes it never saw."""
    from django.urls import reverse

    from models_app.base_models.models import BaseModel
    from models_app.models import FineTunedModel
    from tests.factories import make_backbone

    path = make_backbone(tmp_path / "discs-net")
    BaseModel.objects.create(name="discs-net", source=str(path), local_path=str(path), family="vision_backbone",
                             parameters=1, context_length=0)
    openai_client, user = client_for(live_server)
    api = _api(openai_client)
    file_id = _ready_dataset(live_server, api, per_class=40)
    response = api.post(live_server.url + "/v1/fine_tuning/jobs", json={
        "model": "discs-net", "training_file": file_id, "suffix": "shapes", "seed": 1,
        "method": {"type": "vision", "vision": {"hyperparameters": {
            "strategy": "transfer", "n_epochs": 8, "freeze_epochs": 1, "batch_size": 16, "learning_rate": 2e-3}}}})
    assert response.status_code == 200, response.text
    job = response.json()
    finished = wait_finished(openai_client, job["id"], timeout=300)
    assert finished.status == "succeeded", finished.error
    vision = api.get(f"{live_server.url}/v1/fine_tuning/jobs/{job['id']}").json()["vision"]
    assert vision["strategy"] == "transfer" and vision["evaluation"]["accuracy"] >= 0.9  # chance: 33%

    model = FineTunedModel.objects.get(pk=finished.fine_tuned_model)
    client.force_login(user)
    image = SimpleUploadedFile("q.png", shape_image("triangle", 4000), content_type="image/png")
    page = client.post(reverse("models:classify", args=[model.id]), {"image": image}).content.decode()
    tuned = page[page.index('id="tuned-predictions"'):]
    assert tuned.index("triangles") < min(tuned.index("circles"), tuned.index("squares"))  # ranked first
    assert "discs-net is a backbone without a classification head" in page
