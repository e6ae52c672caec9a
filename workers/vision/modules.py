"""The torch side of ``workers.vision.nets``: a checked design built as modules. Imported only inside
the functions that train or classify, so web processes stay light."""

import torch
from torch import nn

from workers.vision.train import MEAN, SPREAD


class Residual(nn.Module):
    """Two 3×3 convolutions with batch norm, added to the input (a 1×1 convolution when the shape changes)."""

    def __init__(self, inputs: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, out, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = (
            nn.Conv2d(inputs, out, 1, stride=stride, bias=False) if stride != 1 or inputs != out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(y)) + self.shortcut(x)).relu()


class Classifier(nn.Module):
    """``features`` (a design's layers) then ``head`` (dropout and one linear layer to the classes)."""

    def __init__(self, features: nn.Sequential, feature_size: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(feature_size, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def features_build(design: dict) -> nn.Sequential:
    """The design's layers as modules (``nets.design_check`` first: this trusts the design)."""
    modules: list[nn.Module] = []
    channels, flat = 3, None  # flat: the size of a flat feature vector, once there is one
    for layer in design["layers"]:
        kind = layer["type"]
        if kind == "conv":
            kernel = layer.get("kernel", 3)
            modules.append(
                nn.Conv2d(channels, layer["out"], kernel, stride=layer.get("stride", 1), padding=kernel // 2)
            )
            channels = layer["out"]
        elif kind == "residual":
            modules.append(Residual(channels, layer["out"], layer.get("stride", 1)))
            channels = layer["out"]
        elif kind == "batchnorm":
            modules.append(nn.BatchNorm2d(channels))
        elif kind in ("relu", "gelu"):
            modules.append(nn.ReLU() if kind == "relu" else nn.GELU())
        elif kind in ("maxpool", "avgpool"):
            pool = nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d
            modules.append(pool(layer.get("size", 2)))
        elif kind == "dropout":
            rate = layer.get("percent", 20) / 100
            modules.append(nn.Dropout(rate) if flat is not None else nn.Dropout2d(rate))
        elif kind == "global_avg_pool":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            flat = channels
        elif kind == "linear":
            if flat is None:
                modules += [nn.Flatten(), nn.LazyLinear(layer["out"])]
            else:
                modules.append(nn.Linear(flat, layer["out"]))
            flat = layer["out"]
    return nn.Sequential(*modules)


def classifier_build(design: dict, *, image_size: int, classes: int, dropout: float) -> Classifier:
    """A classifier of ``classes`` on ``design``'s features for images of ``image_size``."""
    features = features_build(design)
    with torch.no_grad():  # materialises a lazy layer and measures the features the head reads
        size = features.eval()(torch.zeros(1, 3, image_size, image_size)).flatten(1).shape[1]
    return Classifier(features.train(), size, classes, dropout)


class Probabilities(nn.Module):
    """What a TorchScript or ONNX export runs: float32 pixels in 0..1 (N × 3 × S × S, RGB) in, the
    classifier's class probabilities out; the normalisation and the softmax are inside."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier((pixels - MEAN) / SPREAD).softmax(dim=1)
