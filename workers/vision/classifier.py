"""A trained classifier on disk, and classifying an image with it.

A classifier directory holds ``vision.json`` (the design, the classes in output order, the image size,
the strategy, the dropout) and ``model.safetensors`` (the weights; no pickle is ever loaded).
"""

import io
import json
from collections import OrderedDict
from pathlib import Path

MODEL_FILE = "model.safetensors"
META_FILE = "vision.json"
# The architecture a worker records for a registered backbone that is also a classifier (a head over its
# features, so it answers with classes of its own); a plain backbone's is "VisionBackbone".
CLASSIFIER_ARCHITECTURE = "VisionClassifier"
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")


class ClassifierError(ValueError):
    """Not a classifier directory, or an input that is not an image."""


def classifier_save(model, out_dir: str, *, meta: dict) -> Path:
    """Write ``model``'s weights and ``meta`` (design, classes, image_size, strategy, dropout) to ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(out / MODEL_FILE))
    (out / META_FILE).write_text(json.dumps(meta, indent=1))
    return out


def is_classifier(path: str) -> bool:
    return (Path(path) / META_FILE).is_file() and (Path(path) / MODEL_FILE).is_file()


def classifier_meta(path: str) -> dict:
    """The ``vision.json`` of a classifier directory (or of a checkpoint: it is one)."""
    return json.loads((Path(path) / META_FILE).read_text())


def classifier_load(path: str):
    """(the model in eval mode, its meta) from a classifier directory."""
    from safetensors.torch import load_file

    from workers.vision.modules import classifier_build

    if not is_classifier(path):
        raise ClassifierError(f"{path} is not an image classifier (no {META_FILE} and {MODEL_FILE})")
    meta = classifier_meta(path)
    model = classifier_build(
        meta["design"], image_size=meta["image_size"], classes=len(meta["classes"]), dropout=meta.get("dropout", 0.0)
    )
    model.load_state_dict(load_file(str(Path(path) / MODEL_FILE)))
    return model.eval(), meta


_kept: OrderedDict = OrderedDict()  # this process's loaded classifiers, least recently used first
KEPT = 4


def classifier_get(path: str) -> tuple[object, dict, bool]:
    """``(model, meta, already loaded)`` for ``path``'s classifier: loaded once per process and kept (the
    ``KEPT`` most recently used); a classifier rewritten on disk is loaded again."""
    key = (path, (Path(path) / MODEL_FILE).stat().st_mtime)
    hit = key in _kept
    if hit:
        _kept.move_to_end(key)
    else:
        _kept[key] = classifier_load(path)
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    model, meta = _kept[key]
    return model, meta, hit


def image_check(image: bytes, *, max_pixels: int = 89_478_485) -> tuple[int, int]:
    """The ``(width, height)`` of ``image`` (JPEG, PNG or WebP bytes), read from its header only;
    ``ClassifierError`` for bytes that are no such image or one over ``max_pixels`` (a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    if not image:
        raise ClassifierError("the image is empty")
    try:
        with Image.open(io.BytesIO(image)) as opened:
            kind, width, height = opened.format, opened.width, opened.height
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ClassifierError(f"not an image we can read (JPEG, PNG or WebP): {exc}") from exc
    if kind not in IMAGE_FORMATS:
        raise ClassifierError(f"a {kind} image: send JPEG, PNG or WebP")
    if width * height > max_pixels:
        raise ClassifierError(f"the image is {width}×{height}, over {max_pixels:,} pixels")
    return width, height


def classify(path: str, image: bytes, *, top: int = 5, max_pixels: int = 89_478_485) -> list[dict]:
    """The classes of ``image`` (bytes of a JPEG, PNG or WebP) by ``path``'s classifier, best first:
    ``[{"label", "score"}]`` with scores (softmax) summing to 1 over all classes; ``top`` of them."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from workers.vision.data import image_prepare
    from workers.vision.train import normalise

    model, meta, _ = classifier_get(path)
    image_check(image, max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(image)) as opened:
            pixels = np.asarray(image_prepare(opened, meta["image_size"]))
    except (UnidentifiedImageError, OSError) as exc:
        raise ClassifierError(f"not an image we can read (JPEG, PNG or WebP): {exc}") from exc
    batch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        scores = model(normalise(batch)).softmax(dim=1)[0].tolist()
    ranked = sorted(zip(meta["classes"], scores, strict=True), key=lambda pair: -pair[1])
    return [{"label": label, "score": round(score, 6)} for label, score in ranked[:top]]
