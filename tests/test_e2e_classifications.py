"""Image classification on the real inference worker: the classifier is loaded there once and kept."""

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.api import api_key_for
from tests.factories import image_bytes, make_vision_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_inference_worker_classifies_and_keeps_the_classifier_loaded(live_server, live_base_model,
                                                                         inference_worker):
    model = make_vision_model()
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {api_key_for(model.owner)}"

    def classify(**fields) -> requests.Response:
        return api.post(f"{live_server.url}/v1/images/classifications", data={"model": model.id, **fields},
                        files={"image": ("q.png", image_bytes("dogs", 3), "image/png")})

    first, second = classify(), classify(top=2)
    assert first.status_code == 200, first.text
    predictions = first.json()["predictions"]
    assert sorted(p["label"] for p in predictions) == ["cats", "dogs", "owls"]
    assert [p["score"] for p in predictions] == sorted((p["score"] for p in predictions), reverse=True)
    assert abs(sum(p["score"] for p in predictions) - 1) < 1e-3
    assert (first.headers["X-Model-Cache"], second.headers["X-Model-Cache"]) == ("miss", "hit")
    assert second.json()["predictions"] == predictions[:2]


def test_the_model_page_playground_shows_the_tuned_classes(client, live_base_model, inference_worker):
    model = make_vision_model()
    client.force_login(model.owner)
    image = SimpleUploadedFile("q.png", image_bytes("owls", 1), content_type="image/png")
    page = client.post(reverse("models:classify", args=[model.id]), {"image": image}).content.decode()
    tuned = page[page.index('id="tuned-predictions"'):]
    assert all(label in tuned for label in ("cats", "dogs", "owls")) and "%" in tuned
    assert "no base model to compare with" in page
