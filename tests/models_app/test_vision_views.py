"""A vision model's page: image actions only (classify, its held-out evaluation, its exports), and the image
playground that shows the tuned model's classes beside its base's, or why there is no base."""

import pytest
from django.urls import reverse

from tests.factories import image_bytes, make_vision_model

pytestmark = pytest.mark.django_db


def _page(client, model) -> str:
    client.force_login(model.owner)
    response = client.get(reverse("models:detail", args=[model.id]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_vision_model_page_offers_image_actions_not_text_ones(client):
    page = _page(client, make_vision_model())
    assert 'id="vision-playground"' in page and 'id="classify-image"' in page
    assert 'class="confusion"' in page and "Held-out accuracy" in page
    assert page.count('class="num heat-4">1<') == 3 and page.count('class="num heat-0">0<') == 6  # the diagonal
    assert 'id="open-playground"' not in page  # the text playground (chat)
    assert "Evaluate against" not in page and "Tokens generated per row" not in page
    assert "GGUF precision" not in page
    for kind in ("gguf", "merged", "adapter"):
        assert f"<option>{kind}</option>" not in page
    assert "Download classifier (zip)" in page


def test_a_language_model_page_keeps_its_text_actions(client, base_model, tmp_path):
    from models_app.services import fine_tuned_model_create
    from tests.factories import make_job, make_user

    (tmp_path / "adapter_config.json").write_text("{}")
    model = fine_tuned_model_create(job=make_job(make_user(), status="succeeded"), adapter_dir=tmp_path)
    page = _page(client, model)
    assert 'id="open-playground"' in page and "Evaluate against" in page and "<option>gguf</option>" in page
    assert 'id="vision-playground"' not in page


def test_the_playground_says_why_a_model_trained_from_scratch_has_no_base(client, monkeypatch):
    from models_app.services import classifications

    model = make_vision_model()
    answers = []

    def worker(model_id, image, top):  # what the inference worker sends back (tested end to end)
        answers.append(model_id)
        return {"predictions": [{"label": "dogs", "score": 0.7}, {"label": "cats", "score": 0.2}], "cache": "hit"}

    monkeypatch.setattr(classifications, "_classify_on_worker", worker)
    client.force_login(model.owner)
    response = client.post(reverse("models:classify", args=[model.id]),
                           {"image": _upload(image_bytes("dogs"))}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200 and 'id="tuned-predictions"' in html and "dogs" in html and "70%" in html
    assert 'id="no-base"' in html and "trained from scratch" in html and "no base model to compare with" in html
    assert answers == [model.id]  # the tuned model only: cnn has nothing to ask


def test_the_playground_names_what_is_wrong_with_the_image(client):
    model = make_vision_model()
    client.force_login(model.owner)
    response = client.post(reverse("models:classify", args=[model.id]), {"image": _upload(b"no image")},
                           HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and 'id="classify-error"' in response.content.decode()
    assert "JPEG, PNG or WebP" in response.content.decode()


def test_another_users_model_cannot_be_classified_from_the_page(client):
    model = make_vision_model()
    from tests.factories import make_user

    client.force_login(make_user())
    response = client.post(reverse("models:classify", args=[model.id]), {"image": _upload(image_bytes())})
    assert response.status_code == 404


def _upload(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("q.png", content, content_type="image/png")


def test_misclassified_images_show_with_their_thumbnails_to_the_owner_only(client):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from tests.factories import make_user

    thumbnail = image_bytes("owls", 7, size=(64, 64), fmt="JPEG")
    name = default_storage.save("jobs/test/misclassified/000.jpg", ContentFile(thumbnail))
    evaluation = {"images": 3, "accuracy": 0.6667, "macro_f1": 0.5, "classes": ["cats", "dogs", "owls"],
                  "per_class": [{"label": "owls", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}],
                  "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 1, 0]],
                  "misclassified": [{"image": "owls/007.png", "true": "owls", "predicted": "dogs", "score": 0.81,
                                     "thumbnail": name}]}
    model = make_vision_model(evaluation=evaluation)
    url = reverse("jobs:misclassified", args=[model.job_id, 0])
    for page in (_page(client, model), client.get(reverse("jobs:detail", args=[model.job_id])).content.decode()):
        assert f'src="{url}"' in page and 'alt="owls/007.png"' in page
        assert "owls → <strong>dogs</strong> 81%" in page
    assert f'href="/models/{model.id}/#classify-h">Classify an image</a>' in page  # the job page's next steps
    assert "/models/playground/?model=" not in page
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content) == thumbnail
    assert client.get(reverse("jobs:misclassified", args=[model.job_id, 1])).status_code == 404
    default_storage.delete(name)  # gone from storage: a 404, not a server error
    assert client.get(url).status_code == 404
    client.force_login(make_user())
    assert client.get(url).status_code == 404


def _on_base(model, architecture: str):
    """``model`` as if fine-tuned from an uploaded backbone (its archive on the workers' side only), which the
    worker that described it recorded as ``architecture``."""
    from models_app.base_models.models import BaseModel
    from models_app.models import FineTunedModel

    base = BaseModel.objects.create(name="uploaded-net", source="archive:base_models/uploaded-net.zip",
                                    family="vision_backbone", architecture=architecture, context_length=0)
    FineTunedModel.objects.filter(pk=model.pk).update(base_model=base)
    model.refresh_from_db()
    return model


def _compare(client, monkeypatch, model) -> tuple[str, list]:
    from models_app.services import classifications

    answers = []

    def worker(model_id, image, top):
        answers.append(model_id)
        return {"predictions": [{"label": "dogs", "score": 0.7}], "cache": "hit"}

    monkeypatch.setattr(classifications, "_classify_on_worker", worker)
    client.force_login(model.owner)
    response = client.post(reverse("models:classify", args=[model.id]), {"image": _upload(image_bytes("dogs"))},
                           HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode(), answers


def test_the_playground_tells_a_headless_backbone_from_what_the_worker_recorded(client, monkeypatch):
    """The uploaded archive is not unpacked in the web process (it is not even here)."""
    model = _on_base(make_vision_model(strategy="transfer"), "VisionBackbone")
    html, answers = _compare(client, monkeypatch, model)
    assert 'id="no-base"' in html and "uploaded-net is a backbone without a classification head" in html
    assert answers == [model.id]


def test_the_playground_asks_a_base_the_worker_recorded_as_a_classifier(client, monkeypatch):
    model = _on_base(make_vision_model(strategy="transfer"), "VisionClassifier")
    html, answers = _compare(client, monkeypatch, model)
    assert 'id="base-predictions"' in html and 'id="no-base"' not in html
    assert answers == [model.id, "uploaded-net"]
