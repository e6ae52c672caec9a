"""Exports of an image classifier trained by a vision job: TorchScript and ONNX, each checked on the job's
held-out images before it is offered, listed on the model page and downloaded as a zip whose file answers
as the platform's classifier does; a checkpoint of the job exports too; language-model kinds are refused
for it, and its kinds for a language model."""

import io
import json
import zipfile

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from jobs_app.models import FineTuneJob
from jobs_app.services import job_create, job_run, job_validate
from models_app.models import Export
from models_app.services import export_create, export_run, fine_tuned_model_create
from models_app.services.artifacts import model_files_fetch
from tests.api import api_client
from tests.factories import image_bytes, make_job, make_user, make_vision_dataset
from workers.vision import classify
from workers.vision.data import image_prepare

pytestmark = pytest.mark.django_db(transaction=True)  # job_run writes events from a second thread
CLASSES = ["birds", "cats", "dogs"]


@pytest.fixture
def classifier(live_base_model, no_live_workers):
    """The model a native vision job trained (two epochs on 30 images). No worker runs meanwhile: the tasks
    creating the job and its exports queue would be run there too, in the same work directory as here."""
    user = make_user()
    job = job_create(owner=user, training_file=make_vision_dataset(user).id, model="cnn", objective="vision",
                     hyperparameters={"strategy": "native", "n_epochs": 2, "width": 8, "batch_size": 8})
    job_validate(job_id=job.id)
    job_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.SUCCEEDED, job.error
    return job.result_model


def _probabilities(kind: str, archive: bytes, image: bytes, tmp_path) -> dict[str, float]:
    """Unzip a downloaded export and run its file alone on ``image``, as its vision.json says."""
    from PIL import Image

    zipfile.ZipFile(io.BytesIO(archive)).extractall(tmp_path)
    meta = json.loads((tmp_path / kind / "vision.json").read_text())
    with Image.open(io.BytesIO(image)) as opened:
        pixels = np.asarray(image_prepare(opened, meta["image_size"]), dtype=np.float32) / 255
    batch = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
    if kind == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / kind / meta["file"]), providers=["CPUExecutionProvider"])
        scores = session.run(None, {"pixels": batch})[0][0]
    else:
        import torch

        scores = torch.jit.load(str(tmp_path / kind / meta["file"]))(torch.from_numpy(batch))[0].detach().numpy()
    return dict(zip(meta["classes"], scores.tolist(), strict=True))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_classifier_exports_as_torchscript_and_onnx_checked_on_its_held_out_images(classifier, client, tmp_path):
    api = api_client(classifier.owner)
    local = model_files_fetch(classifier, tmp_path / "source")
    image = image_bytes("dogs", 500)  # an image no job saw
    platform = {p["label"]: p["score"] for p in classify(str(local), image)}
    for kind in ("torchscript", "onnx"):
        created = api.post(f"/v1/registry/models/{classifier.id}/exports", {"kind": kind}, format="json")
        assert created.status_code == 201, created.content
        export = export_run(export_id=created.json()["id"])
        assert export.status == Export.Status.VERIFIED, export.error
        checked = export.verification["images"]
        assert {row["image"].split("/")[0] for row in checked} == set(CLASSES)  # held-out images of each class
        assert all(row["max_probability_diff"] <= 1e-4 for row in checked)

        response = api.get(f"/v1/models/{classifier.id}/download", {"artifact": kind})
        assert response.status_code == 200
        assert response["Content-Disposition"].endswith(f'-{kind}.zip"')
        exported = _probabilities(kind, b"".join(response.streaming_content), image, tmp_path / kind)
        assert max(exported, key=exported.get) == max(platform, key=platform.get)
        assert all(abs(exported[label] - platform[label]) < 1e-4 for label in CLASSES)

    # a checkpoint of the job exports too; with the dataset's files gone it is checked on random pixels
    default_storage.delete(classifier.job.dataset.file.name)
    checkpoint = classifier.job.checkpoints.order_by("step").first()
    export = export_run(export_id=export_create(model=checkpoint, kind="onnx").id)
    assert export.status == Export.Status.VERIFIED, export.error
    assert export.verification["images"][0]["image"] == "random pixels 1"

    client.force_login(classifier.owner)
    page = client.get(reverse("models:detail", args=[classifier.id])).content.decode()
    assert '<select id="export-kind" name="kind"><option>torchscript</option><option>onnx</option></select>' in page
    assert "?artifact=torchscript" in page and "?artifact=onnx" in page


def _classifier_model(tmp_path):
    """A vision job's model without training it (what creating an export checks needs no weights)."""
    user = make_user()
    job = job_create(owner=user, training_file=make_vision_dataset(user).id, model="cnn", objective="vision",
                     hyperparameters={"strategy": "native", "n_epochs": 1})
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "vision.json").write_text("{}")
    return fine_tuned_model_create(job=job, adapter_dir=tmp_path / "model")


@pytest.mark.parametrize("kind", ["merged", "gguf", "adapter"])
def test_a_language_model_kind_is_refused_for_a_classifier(live_base_model, tmp_path, kind):
    model = _classifier_model(tmp_path)
    response = api_client(model.owner).post(f"/v1/registry/models/{model.id}/exports", {"kind": kind},
                                            format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "kind"
    assert error["message"] == (f"{kind} does not apply to an image classifier (cnn); it exports as torchscript "
                                "or onnx")
    assert not Export.objects.exists()


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_a_classifier_kind_is_refused_for_a_language_model(live_base_model, trained_adapter, kind):
    model = fine_tuned_model_create(job=make_job(make_user("alice")), adapter_dir=trained_adapter)
    response = api_client(model.owner).post(f"/v1/registry/models/{model.id}/exports", {"kind": kind},
                                            format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "kind" and error["message"].startswith(f"{kind} does not apply to a language model")
    assert not Export.objects.exists()
