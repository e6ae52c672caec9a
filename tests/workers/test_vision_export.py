"""TorchScript and ONNX exports of a trained image classifier: reloaded and checked against the source on
held-out images before they are offered; the exported file, loaded as a user would, ranks a new image as
the platform's classifier does; an export that answers otherwise fails with the image and the difference."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.factories import archive_bytes
from workers.events import LogLine, Progress
from workers.export import ExportConfig, run_export
from workers.images import ImageConfig, run_image_validation
from workers.sample_data import shape_image, shape_set
from workers.vision import classify, config_make, run_vision_training, summary_from_stats, vision_plan
from workers.vision.data import image_prepare, manifest_read
from workers.vision.export import vision_export_verify

CLASSES = ["circles", "squares", "triangles"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> dict:
    """A native classifier trained two epochs on 36 shapes, and six of its images to check exports on."""
    root = tmp_path_factory.mktemp("classifier")
    (root / "shapes.zip").write_bytes(archive_bytes(shape_set(12)))
    checked = run_image_validation(ImageConfig(path=str(root / "shapes.zip"), filename="shapes.zip",
                                               output_dir=str(root / "check")))
    options = vision_plan({"strategy": "native", "n_epochs": 2, "width": 8, "batch_size": 8},
                          summary_from_stats(checked.stats))
    config = config_make(options, archive_path=str(root / "shapes.zip"), archive_name="shapes.zip",
                         manifest_path=str(root / "check" / "manifest.jsonl"), output_dir=str(root / "out"))
    trained = run_vision_training(config, lambda event: None, lambda: "")
    names = [row["image"] for row in manifest_read(config.manifest_path)][::6]
    return {"model_dir": trained.model_dir, "archive": str(root / "shapes.zip"), "images": tuple(names)}


def _config(classifier: dict, tmp_path: Path, kind: str, **fields) -> ExportConfig:
    return ExportConfig(base_model_path="", adapter_path=classifier["model_dir"], output_dir=str(tmp_path / "out"),
                        kind=kind, images_archive=classifier["archive"], images_archive_name="shapes.zip",
                        images=classifier["images"], model_card="# Shapes\n", **fields)


def _run_as_a_user(kind: str, directory: Path, image: bytes) -> list[float]:
    """The exported file alone, fed an image as its vision.json says: its class probabilities."""
    import io

    from PIL import Image

    meta = json.loads((directory / "vision.json").read_text())
    with Image.open(io.BytesIO(image)) as opened:
        pixels = np.asarray(image_prepare(opened, meta["image_size"]), dtype=np.float32) / 255
    batch = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
    if kind == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(directory / meta["file"]), providers=["CPUExecutionProvider"])
        return session.run(None, {"pixels": batch})[0][0].tolist()
    import torch

    return torch.jit.load(str(directory / meta["file"]))(torch.from_numpy(batch))[0].tolist()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # a user loads it so
@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_an_export_answers_as_its_source(classifier, tmp_path, kind):
    events = []
    result = run_export(_config(classifier, tmp_path, kind), events.append)
    assert result.verified, result.error
    checked = result.details["images"]
    assert [row["image"] for row in checked] == list(classifier["images"])
    assert all(row["export_label"] == row["source_label"] and row["max_probability_diff"] <= 1e-4 for row in checked)
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert any(isinstance(e, LogLine) and e.message == "Export verified" for e in events)

    directory = Path(result.path)
    meta = json.loads((directory / "vision.json").read_text())
    assert meta["classes"] == CLASSES and meta["format"] == kind and "0..1" in meta["input"]
    assert (directory / "README.md").read_text() == "# Shapes\n" and result.size_bytes > 0
    for shape, seed in (("circle", 4000), ("triangle", 4001)):  # images it never saw
        image = shape_image(shape, seed)
        exported = dict(zip(CLASSES, _run_as_a_user(kind, directory, image), strict=True))
        platform = {p["label"]: p["score"] for p in classify(classifier["model_dir"], image)}
        assert max(exported, key=exported.get) == max(platform, key=platform.get)
        assert all(abs(exported[label] - platform[label]) < 1e-4 for label in CLASSES)


@pytest.mark.parametrize("shift", [0.05, 50.0])
def test_an_export_that_answers_otherwise_fails_naming_the_image(classifier, tmp_path, shift):
    """The export of one classifier checked against another (one class's logit raised): refused, with the
    first image it differs on."""
    from workers.vision.classifier import classifier_load, classifier_save

    result = run_export(_config(classifier, tmp_path, "onnx"), lambda event: None)
    first = result.details["images"][0]
    raised = next(label for label in CLASSES if label != first["export_label"])
    model, meta = classifier_load(classifier["model_dir"])
    model.head[-1].bias.data[CLASSES.index(raised)] += shift
    other = classifier_save(model, str(tmp_path / "other"), meta=meta)
    checked = vision_export_verify(_config({**classifier, "model_dir": str(other)}, tmp_path, "onnx"), result.path)
    assert not checked.verified
    if shift > 1:  # every image's best class is now the raised one
        assert checked.error == (f"on image {first['image']} the export predicts {first['export_label']!r}, the "
                                 f"source {raised!r}")
    else:
        assert checked.error.startswith(f"on image {first['image']} the class probabilities differ from the "
                                        "source's by ") and checked.error.endswith("(tolerance 0.0001)")


def test_without_sample_images_an_export_is_checked_on_random_pixels(classifier, tmp_path):
    result = run_export(_config({**classifier, "images": ()}, tmp_path, "torchscript"), lambda event: None)
    assert result.verified and result.details["images"][0]["image"] == "random pixels 1"
