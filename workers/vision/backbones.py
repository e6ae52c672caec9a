"""Backbones for the ``transfer`` strategy, in plain torch (PyPI's torchvision does not load beside this
torch: 'operator torchvision::nms does not exist'), as directories a base model is registered from.

A backbone directory holds ``config.json`` (``{"model_type": "vision_backbone", "architectures":
["VisionBackbone"], "design": {...}, "image_size": 32, "pretrained_on": "..."}``; the design is a
``workers.vision.nets`` design, e.g. ``resnet_design()``) and ``backbone.safetensors`` (the weights of
the design's layers). ``backbone_pretrain`` makes one by training on labelled images, which is how the
tests and an operator without a hub get one.
"""

import json
from pathlib import Path

BACKBONE_TYPE = "vision_backbone"
WEIGHTS_FILE = "backbone.safetensors"


class BackboneError(ValueError):
    """A directory that is not a usable backbone."""


def is_backbone(path: str) -> bool:
    config = Path(path) / "config.json"
    if not path or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == BACKBONE_TYPE
    except (ValueError, AttributeError):
        return False


def backbone_config(path: str) -> dict:
    """The backbone's ``config.json``, its design checked; ``BackboneError`` otherwise."""
    from workers.vision.nets import DesignError, design_check

    if not is_backbone(path):
        raise BackboneError(
            f'{path or "the model"} is not a vision backbone (config.json with model_type "{BACKBONE_TYPE}")'
        )
    config = json.loads((Path(path) / "config.json").read_text())
    if not (Path(path) / WEIGHTS_FILE).is_file():
        raise BackboneError(f"{path} has no {WEIGHTS_FILE}")
    try:
        design_check(config.get("design"), image_size=int(config.get("image_size", 32)), classes=1)
    except (DesignError, TypeError, ValueError) as exc:
        raise BackboneError(f"{path}/config.json: {exc}") from exc
    return config


def backbone_parameters(path: str) -> int:
    config = backbone_config(path)
    from workers.vision.nets import design_check

    stats = design_check(config["design"], image_size=int(config["image_size"]), classes=1)
    return stats.parameters - stats.features - 1  # without the one-class head design_check adds


def backbone_save(features, *, design: dict, image_size: int, path: str, pretrained_on: str = "") -> Path:
    """Write a backbone directory from trained ``features`` (the modules of ``design``)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in features.state_dict().items()}, str(out / WEIGHTS_FILE))
    (out / "config.json").write_text(
        json.dumps(
            {
                "model_type": BACKBONE_TYPE,
                "architectures": ["VisionBackbone"],
                "design": design,
                "image_size": image_size,
                "pretrained_on": pretrained_on,
            },
            indent=1,
        )
    )
    return out


def backbone_weights(path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / WEIGHTS_FILE))


def backbone_pretrain(
    path: str,
    pixels,
    labels,
    *,
    classes: int,
    widths: tuple[int, ...] = (16, 32, 64),
    epochs: int = 4,
    seed: int = 0,
    pretrained_on: str = "",
) -> Path:
    """Train ``resnet_design(widths)`` to classify ``pixels`` (uint8, N × 3 × S × S) into ``labels`` and keep
    its feature layers as a backbone at ``path``."""
    import torch

    from workers.events import emit_nothing
    from workers.vision.config import VisionConfig
    from workers.vision.modules import classifier_build
    from workers.vision.nets import resnet_design
    from workers.vision.train import Images, fit

    torch.manual_seed(seed)
    size = int(pixels.shape[-1])
    design = resnet_design(widths)
    model = classifier_build(design, image_size=size, classes=classes, dropout=0.0)
    config = VisionConfig(n_epochs=epochs, batch_size=32, image_size=size, seed=seed, early_stopping_patience=0)
    empty = pixels[:0]
    fit(model, Images(pixels, labels, empty, labels[:0], list(range(classes))), config, emit_nothing, lambda: "")
    return backbone_save(model.features, design=design, image_size=size, path=path, pretrained_on=pretrained_on)
