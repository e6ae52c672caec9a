"""Verified TorchScript and ONNX exports of an image classifier (``workers.export`` runs them).

An export takes float32 pixels in 0..1 (N × 3 × S × S, RGB, each image resized to S × S as
``workers.vision.data.image_prepare`` does) and returns the class probabilities, in the order of the
``classes`` of the ``vision.json`` beside it: the normalisation and the softmax are inside. Before it is
offered it is reloaded as a user would load it (``torch.jit.load``, ``onnxruntime.InferenceSession``) and
its probabilities on sample images (a few of the job's held-out images) are compared with the source
classifier's: the same best class on every image, and probabilities within ``probability_tolerance``.
An export that differs fails with the image and the difference; it is never offered.
"""

import json
import warnings
from pathlib import Path

from workers.events import Emit, LogLine, Progress

FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
RANDOM_SAMPLES = 8  # images of random pixels when no sample image is given
ONNX_OPSET = 17


def run_vision_export(config, emit: Emit):
    """Write ``config.kind`` of the classifier in ``config.adapter_path``, reload it and compare it with
    the source on the sample images; an ``ExportResult`` (a failed verification is returned, not raised)."""
    from workers.vision.classifier import classifier_load

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    emit(LogLine(f"Exporting the image classifier as {config.kind}"))
    model, meta = classifier_load(config.adapter_path)
    emit(Progress(1, 3))
    path = _write(config, model, meta, output / config.kind)
    emit(LogLine(f"Wrote {FILES[config.kind]}; verifying it against the source"))
    emit(Progress(2, 3))
    result = vision_export_verify(config, path)
    emit(Progress(3, 3))
    emit(LogLine("Export verified" if result.verified else f"Verification failed: {result.error}",
                 level="info" if result.verified else "error"))
    return result


def _write(config, model, meta: dict, target: Path) -> Path:
    import torch

    from workers.vision.modules import Probabilities

    target.mkdir(parents=True, exist_ok=True)
    wrapped = Probabilities(model.cpu().eval()).eval()
    example = torch.rand(2, 3, meta["image_size"], meta["image_size"])
    file = target / FILES[config.kind]
    # torch marks TorchScript, and the TorchScript-based ONNX exporter (dynamo=False: no onnxscript needed),
    # deprecated; both still write files that load where torch.export's do not (older runtimes, C++)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if config.kind == "torchscript":
            torch.jit.trace(wrapped, example).save(str(file))
        else:
            torch.onnx.export(wrapped, (example,), str(file), dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["pixels"], output_names=["probabilities"],
                              dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"}})
    (target / "vision.json").write_text(json.dumps(_export_meta(config.kind, meta), indent=1))
    if config.model_card:
        (target / "README.md").write_text(config.model_card, encoding="utf-8")
    return target


def _export_meta(kind: str, meta: dict) -> dict:
    side = meta["image_size"]
    return {
        "format": kind,
        "file": FILES[kind],
        "classes": meta["classes"],
        "image_size": side,
        "input": f"float32 pixels in 0..1, N × 3 × {side} × {side}, RGB; each image resized (squashed) to "
                 f"{side} × {side} with bilinear filtering",
        "output": "class probabilities (softmax), N × classes, in the order of classes",
        "strategy": meta.get("strategy", ""),
        "design": meta.get("design", {}),
    }


def vision_export_verify(config, path: Path | str):
    """Reload the export in ``path`` and compare its probabilities on the sample images with those of the
    source classifier ``config.adapter_path``; an ``ExportResult``, verified or with the reason it is not."""
    import torch

    from workers.export import export_result
    from workers.vision.classifier import classifier_load
    from workers.vision.train import normalise

    path = Path(path)
    source, meta = classifier_load(config.adapter_path)
    pixels, names = sample_images(config, meta["image_size"])
    tolerance = float(config.probability_tolerance)
    details = {"format": config.kind, "probability_tolerance": tolerance, "images": []}
    try:
        with torch.no_grad():
            expected = source(normalise(pixels)).softmax(dim=1).numpy()
        got = _export_probabilities(config.kind, path, pixels.float().numpy() / 255)
        classes = meta["classes"]
        for name, want, have in zip(names, expected, got, strict=True):
            details["images"].append({"image": name, "source_label": classes[int(want.argmax())],
                                      "export_label": classes[int(have.argmax())],
                                      "max_probability_diff": float(abs(have - want).max())})
        _probabilities_compare(details["images"], tolerance)
    except Exception as exc:
        return export_result(path, details, failure=exc)
    return export_result(path, details)


def _export_probabilities(kind: str, path: Path, pixels):
    """The reloaded export's probabilities of ``pixels`` (float32 in 0..1), as numpy rows."""
    import numpy as np

    if kind == "torchscript":
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see _write
            return torch.jit.load(str(path / FILES[kind]), map_location="cpu")(torch.from_numpy(pixels)).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path / FILES[kind]), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def _probabilities_compare(rows: list[dict], tolerance: float) -> None:
    from workers.export import VerificationError

    for row in rows:  # another best class is the worse news: said first, whichever image it is on
        if row["export_label"] != row["source_label"]:
            raise VerificationError(f"on image {row['image']} the export predicts {row['export_label']!r}, the "
                                    f"source {row['source_label']!r}")
    for row in rows:
        if not row["max_probability_diff"] <= tolerance:  # also catches NaN
            raise VerificationError(f"on image {row['image']} the class probabilities differ from the source's by "
                                    f"{row['max_probability_diff']:.3g} (tolerance {tolerance:g})")


def sample_images(config, size: int):
    """(uint8 pixels N × 3 × size × size, their names): ``config.images`` of ``config.images_archive``, or
    images of random pixels (seeded) when none are given."""
    import torch

    from workers.vision.data import images_load

    if config.images_archive and config.images:
        names = list(config.images)
        return images_load(config.images_archive, config.images_archive_name, names, size), names
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (RANDOM_SAMPLES, 3, size, size), generator=generator, dtype=torch.uint8)
    return pixels, [f"random pixels {index + 1}" for index in range(RANDOM_SAMPLES)]
