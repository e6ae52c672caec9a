"""POST /v1/images/classifications: the web process checks the model and the image's header and refuses
with a 400 or 404 naming the field, before anything reaches the inference worker."""

import pytest

from models_app.services import fine_tuned_model_create
from tests.api import api_client
from tests.factories import file_like, image_bytes, make_job, make_user, make_vision_model

pytestmark = pytest.mark.django_db


def _classify(user, model: str, image: bytes):
    return api_client(user).post("/v1/images/classifications", {"model": model, "image": file_like(image, "q.png")},
                                 format="multipart")


@pytest.mark.usefixtures("no_live_workers")
def test_what_is_not_an_image_is_refused_without_a_worker():
    model = make_vision_model()
    response = _classify(model.owner, model.id, b"GIF89a not really")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "image" and "JPEG, PNG or WebP" in error["message"]


@pytest.mark.usefixtures("no_live_workers")
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(settings):
    model = make_vision_model()
    settings.DATASET_VISION_MAX_PIXELS = 64 * 64 - 1
    response = _classify(model.owner, model.id, image_bytes(size=(64, 64)))
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "image"
    assert "64×64, over 4,095 pixels" in error["message"]


@pytest.mark.usefixtures("no_live_workers")
def test_an_image_over_the_byte_limit_is_refused_unread(settings, monkeypatch):
    from django.core.files.uploadedfile import InMemoryUploadedFile

    model = make_vision_model()
    settings.DATASET_VISION_MAX_IMAGE_BYTES = 100

    def unread(self, *args):
        raise AssertionError("an image over the limit was read into memory")

    monkeypatch.setattr(InMemoryUploadedFile, "read", unread)
    response = _classify(model.owner, model.id, image_bytes(size=(64, 64)))
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "image" and "over 100 bytes" in error["message"]


@pytest.mark.usefixtures("no_live_workers")
def test_a_gif_is_refused_by_name():
    model = make_vision_model()
    response = _classify(model.owner, model.id, image_bytes(fmt="GIF"))
    assert response.status_code == 400 and "a GIF image: send JPEG, PNG or WebP" in response.json()["error"]["message"]


def test_a_language_model_or_another_users_vision_model_is_refused(base_model, tmp_path):
    user = make_user()
    (tmp_path / "adapter_config.json").write_text("{}")
    text = fine_tuned_model_create(job=make_job(user, status="succeeded"), adapter_dir=tmp_path)
    response = _classify(user, text.id, image_bytes())
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    assert "is a language model" in response.json()["error"]["message"]
    theirs = make_vision_model()
    response = _classify(user, theirs.id, image_bytes())
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"
