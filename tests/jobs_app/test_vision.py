"""Vision jobs through the API: the strategy is chosen or refused when the job is created (a 400 naming
``strategy`` and nothing stored), and the model must be ``cnn`` or a vision backbone."""

import pytest

from jobs_app.models import FineTuneJob
from models_app.base_models.services import base_model_builtin_ensure
from tests.api import api_client
from tests.factories import make_dataset, make_user, make_vision_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    base_model_builtin_ensure()
    return make_user()


def _create(owner, training_file: str, model: str = "cnn", **hyperparameters):
    return api_client(owner).post(
        "/v1/fine_tuning/jobs",
        {
            "model": model,
            "training_file": training_file,
            "method": {"type": "vision", "vision": {"hyperparameters": hyperparameters}},
        },
        format="json",
    )


def test_auto_picks_native_for_cnn_and_the_job_shows_its_options(owner):
    dataset = make_vision_dataset(owner)
    response = _create(owner, dataset.id, n_epochs=2)
    assert response.status_code == 200, response.json()
    body = response.json()
    options = body["method"]["vision"]["hyperparameters"]
    assert body["method"]["type"] == "vision" and options["strategy"] == "native"
    assert "strategy" in options["auto_resolved"] and options["n_epochs"] == 2 and options["image_size"] == 32
    assert "adapter" not in options and "lora_r" not in options and "depth" in options
    assert FineTuneJob.objects.get(pk=body["id"]).objective == "vision"


@pytest.mark.parametrize(
    ("hyperparameters", "param", "message"),
    [
        ({"strategy": "transfer"}, "method.vision.hyperparameters.strategy", "name a registered backbone"),
        ({"strategy": "llm_designed"}, "method.vision.hyperparameters.strategy", "no designer model is configured"),
        ({"strategy": "native", "depth": 8}, "method.vision.hyperparameters.strategy", "depth 8 halves"),
        ({"strategy": "mystery"}, "method.vision.hyperparameters.strategy", 'must be one of "native"'),
        ({"optimizer": "lbfgs"}, "method.vision.hyperparameters.optimizer", '"adam", "adamw", "sgd", "rmsprop"'),
        ({"lora_r": 8}, "method.vision.hyperparameters.lora_r", "applies only with objective"),
    ],
)
def test_a_strategy_or_option_that_cannot_apply_is_a_400_naming_it(owner, hyperparameters, param, message):
    dataset = make_vision_dataset(owner)
    response = _create(owner, dataset.id, **hyperparameters)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]
    assert not FineTuneJob.objects.exists()


def test_vision_needs_a_vision_dataset_and_a_vision_model(owner):
    text = make_dataset(owner)
    images = make_vision_dataset(owner)
    refused = _create(owner, text.id).json()["error"]
    assert refused["param"] == "training_file" and "a vision job trains on a vision dataset" in refused["message"]
    refused = _create(owner, images.id, model="tiny-llama").json()["error"]
    assert refused["param"] == "model" and "tiny-llama is a language model" in refused["message"]
    response = api_client(owner).post(
        "/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": images.id}, format="json"
    )
    assert response.status_code == 400 and 'method {"type": "vision"}' in response.json()["error"]["message"]
    response = api_client(owner).post("/v1/fine_tuning/jobs", {"model": "cnn", "training_file": text.id}, format="json")
    assert response.json()["error"]["param"] == "model"
    assert not FineTuneJob.objects.exists()


def test_a_vision_job_refuses_a_validation_file(owner):
    dataset = make_vision_dataset(owner)
    response = api_client(owner).post(
        "/v1/fine_tuning/jobs",
        {
            "model": "cnn",
            "training_file": dataset.id,
            "validation_file": make_vision_dataset(owner).id,
            "method": {"type": "vision"},
        },
        format="json",
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "validation_file"


def test_classifying_with_a_language_model_or_an_unknown_one_is_refused(owner):
    from tests.factories import file_like, image_bytes

    client = api_client(owner)
    response = client.post(
        "/v1/images/classifications",
        {"model": "nobody@v1", "image": file_like(image_bytes(), "a.png")},
        format="multipart",
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


def test_auto_picks_transfer_for_a_registered_backbone(owner, tmp_path):
    from models_app.base_models.models import BaseModel
    from workers.model_files import model_describe
    from workers.vision.backbones import backbone_save
    from workers.vision.modules import features_build
    from workers.vision.nets import resnet_design

    design = resnet_design((8, 16))
    path = backbone_save(features_build(design), design=design, image_size=24, path=str(tmp_path / "resnet-s"))
    info = model_describe(str(path))  # what the worker reads when the directory is registered
    assert (info.family, info.shape, info.context_length) == ("vision_backbone", {"image_size": 24}, 0)
    BaseModel.objects.create(
        name="resnet-s",
        source=str(path),
        local_path=str(path),
        family=info.family,
        parameters=info.parameters,
        context_length=0,
    )
    dataset = make_vision_dataset(owner)
    body = _create(owner, dataset.id, model="resnet-s").json()
    options = body["method"]["vision"]["hyperparameters"]
    assert options["strategy"] == "transfer" and options["image_size"] == 24 and options["freeze_epochs"] == 1
    refused = _create(owner, dataset.id, model="resnet-s", strategy="native").json()["error"]
    assert refused["param"] == "method.vision.hyperparameters.strategy"
    assert "use model cnn, not a backbone" in refused["message"]


def test_a_vision_job_is_estimated_from_its_images_and_past_runs_of_its_strategy(owner):
    from jobs_app.services.preflight import job_validate

    dataset = make_vision_dataset(owner)  # 30 images in 3 classes
    first = FineTuneJob.objects.get(pk=_create(owner, dataset.id, n_epochs=2, batch_size=4).json()["id"])
    job_validate(job_id=first.id)
    first.refresh_from_db()
    estimate = first.estimate
    assert first.status == "queued" and estimate["images"] + estimate["validation_images"] == 30
    assert 0 < estimate["validation_images"] < 10 and estimate["steps_per_epoch"] == -(-estimate["images"] // 4)
    assert estimate["steps"] == 2 * estimate["steps_per_epoch"] and estimate["seconds"] is None  # nothing to go by

    # a finished run of the same strategy: 8 steps of 4 images of 32x32 pixels in 16 s
    FineTuneJob.objects.filter(pk=first.id).update(status="succeeded", attempt=1,
                                                     metrics={"wall_seconds": 16.0, "steps": 8})
    second = FineTuneJob.objects.get(pk=_create(owner, dataset.id, n_epochs=3, batch_size=8, image_size=16)
                                     .json()["id"])
    job_validate(job_id=second.id)
    second.refresh_from_db()
    pace = 16.0 / (8 * 4 * 32 * 32)  # seconds per image and pixel
    assert second.estimate["steps"] == 3 * -(-second.estimate["images"] // 8)
    assert second.estimate["seconds"] == round(pace * second.estimate["steps"] * 8 * 16 * 16, 1)
    queued = second.events.filter(message__startswith="Files validated").get().message
    assert f"{second.estimate['images']} training images in {second.estimate['steps']} steps; about" in queued


def test_a_vision_success_refused_at_the_last_moment_leaves_no_thumbnails(owner, tmp_path):
    """The job was cancelled while its run finished: it is not succeeded, and the thumbnails its summary
    stored are gone again (nothing names them)."""
    from django.core.files.storage import default_storage

    from finetune_site.errors import Conflict
    from jobs_app.services import job_create
    from jobs_app.services.running import _job_finish
    from workers.vision.config import VisionResult

    job = job_create(owner=owner, training_file=make_vision_dataset(owner).id, model="cnn", objective="vision",
                     hyperparameters={"strategy": "native", "n_epochs": 1})
    FineTuneJob.objects.filter(pk=job.pk).update(status=FineTuneJob.Status.CANCELLED, attempt=1)
    job.refresh_from_db()
    (tmp_path / "000.jpg").write_bytes(b"a thumbnail")
    evaluation = {"images": 1, "accuracy": 0.0, "misclassified": [
        {"file": "000.jpg", "image": "cats/1.png", "true": "cats", "predicted": "dogs", "score": 0.9}]}
    result = VisionResult(model_dir=str(tmp_path), strategy="native", epochs=1, best_epoch=1, train_loss=1.0,
                          valid_loss=1.0, valid_accuracy=0.0, evaluation=evaluation, design={}, steps=1,
                          total_steps=1, wall_seconds=1.0, misclassified_dir=str(tmp_path))
    with pytest.raises(Conflict):
        _job_finish(job, result, trained_at=0.0)
    assert not default_storage.exists(f"jobs/{job.id}/misclassified/000.jpg")
    job.refresh_from_db()
    assert job.status == FineTuneJob.Status.CANCELLED and not job.vision


def test_sample_images_for_an_export_check_fetch_the_archive_only(owner, tmp_path):
    """The held-out images, classes taking turns, from the job's stored options: neither the manifest is
    copied nor the base model's files looked for (an uploaded backbone gone from storage is no matter)."""
    from jobs_app.services import job_create, vision_sample_images
    from models_app.base_models.models import BaseModel

    dataset = make_vision_dataset(owner)
    job = job_create(owner=owner, training_file=dataset.id, model="cnn", objective="vision",
                     hyperparameters={"strategy": "native", "n_epochs": 1})
    gone = BaseModel.objects.create(name="gone-net", source="archive:base_models/gone.zip", family="vision_backbone")
    FineTuneJob.objects.filter(pk=job.pk).update(base_model=gone)
    job.refresh_from_db()

    archive, name, images = vision_sample_images(job, tmp_path, count=3)
    assert name == "images.zip" and open(archive, "rb").read() == dataset.file.open("rb").read()
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == ["images/images.zip"]
    assert len(images) == 3 and len({image.split("/")[0] for image in images}) == 3  # one of each class


def test_the_worker_records_whether_a_backbone_classifies_on_its_own(tmp_path):
    from tests.factories import classifier_write
    from workers.model_files import model_describe
    from workers.vision.backbones import backbone_save
    from workers.vision.modules import features_build
    from workers.vision.nets import resnet_design

    design = resnet_design((8, 16))
    path = backbone_save(features_build(design), design=design, image_size=24, path=str(tmp_path / "net"))
    assert model_describe(str(path)).architecture == "VisionBackbone"
    classifier_write(path, ["cats", "dogs"])  # a head over its features beside it
    assert model_describe(str(path)).architecture == "VisionClassifier"
