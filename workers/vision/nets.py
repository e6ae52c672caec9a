"""Networks described as data: a design is a JSON object of layers from an allow-list, checked (shapes,
parameters, multiply-adds) before any weight exists, then built with plain torch.

``{"layers": [{"type": "conv", "out": 32, "kernel": 3}, {"type": "batchnorm"}, {"type": "relu"},
{"type": "maxpool", "size": 2}, {"type": "global_avg_pool"}]}`` is a design: the layers turn an image
(3 × size × size) into features; the classifier (dropout, then one linear layer per class) is added by
``workers.vision.modules.classifier_build``. The native CNN, the transfer backbones and the LLM's
proposals are all designs, so one checker and one builder serve the three strategies, and a proposal
is never executed as code.
"""

from dataclasses import dataclass

# type → (its fields with their allowed ranges, the fields that must be given)
LAYERS: dict[str, dict[str, tuple[int, int]]] = {
    "conv": {"out": (1, 1024), "kernel": (1, 7), "stride": (1, 4)},
    "residual": {"out": (1, 1024), "stride": (1, 2)},  # two 3×3 convolutions with batch norm and a shortcut
    "batchnorm": {},
    "relu": {},
    "gelu": {},
    "maxpool": {"size": (2, 4)},
    "avgpool": {"size": (2, 4)},
    "dropout": {"percent": (0, 90)},
    "global_avg_pool": {},
    "linear": {"out": (1, 4096)},
}
REQUIRED = {"conv": ("out",), "residual": ("out",), "linear": ("out",)}
DEFAULTS = {"kernel": 3, "stride": 1, "size": 2, "percent": 20}
MAX_LAYERS = 64


class DesignError(ValueError):
    """A design that cannot be built or breaks a budget; the message says which layer and why."""


@dataclass(frozen=True)
class DesignStats:
    """What a checked design costs: weights (the classifier included), multiply-adds per image
    (millions) and the size of the features the classifier reads."""

    parameters: int
    mflops: float
    features: int


def design_check(
    design, *, image_size: int, classes: int, max_parameters: int | None = None, max_mflops: float | None = None
) -> DesignStats:
    """Check ``design`` against the allow-list and the budgets; ``DesignError`` says what is wrong."""
    layers = _layers_of(design)
    channels, side, flat = 3, image_size, None  # flat: features after global_avg_pool or linear
    parameters = flops = 0
    for number, layer in enumerate(layers, start=1):
        kind = layer["type"]
        where = f"layer {number} ({kind})"
        if flat is not None and kind not in ("linear", "dropout", "relu", "gelu"):
            raise DesignError(f"{where}: after global_avg_pool or linear only linear, dropout, relu or gelu may follow")
        if kind in ("conv", "residual"):
            out, stride = layer["out"], layer.get("stride", 1)
            kernel = layer.get("kernel", 3) if kind == "conv" else 3
            new_side = (side + 2 * (kernel // 2) - kernel) // stride + 1
            if new_side < 1:
                raise DesignError(f"{where}: the image is {side}×{side} here, too small for it")
            weights = channels * out * kernel * kernel + out
            flops += channels * out * kernel * kernel * new_side * new_side
            if kind == "residual":
                weights += out * out * 9 + out + 4 * out  # the second convolution, two batch norms
                flops += out * out * 9 * new_side * new_side
                if stride != 1 or channels != out:
                    weights += channels * out
                    flops += channels * out * new_side * new_side
            parameters += weights
            channels, side = out, new_side
        elif kind == "batchnorm":
            parameters += 2 * channels
        elif kind in ("maxpool", "avgpool"):
            if side // layer.get("size", 2) < 1:
                raise DesignError(
                    f"{where}: the image is {side}×{side} here, too small to pool by {layer.get('size', 2)}"
                )
            side //= layer.get("size", 2)
        elif kind == "global_avg_pool":
            flat, side = channels, 1
        elif kind == "linear":
            inputs = flat if flat is not None else channels * side * side
            parameters += inputs * layer["out"] + layer["out"]
            flops += inputs * layer["out"]
            flat = layer["out"]
    features = flat if flat is not None else channels * side * side
    parameters += features * classes + classes
    flops += features * classes
    stats = DesignStats(parameters=parameters, mflops=round(flops / 1e6, 3), features=features)
    if max_parameters is not None and parameters > max_parameters:
        raise DesignError(
            f"the network has {parameters:,} parameters, over the budget of {max_parameters:,}; "
            "use fewer or narrower layers"
        )
    if max_mflops is not None and stats.mflops > max_mflops:
        raise DesignError(
            f"one image costs {stats.mflops:,.1f} million multiply-adds, over the budget of "
            f"{max_mflops:,}; pool earlier or use narrower layers"
        )
    return stats


def _layers_of(design) -> list[dict]:
    if not isinstance(design, dict) or not isinstance(design.get("layers"), list):
        raise DesignError('a design is a JSON object {"layers": [...]}')
    layers = design["layers"]
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise DesignError(f"a design has 1 to {MAX_LAYERS} layers, not {len(layers)}")
    for number, layer in enumerate(layers, start=1):
        if not isinstance(layer, dict) or layer.get("type") not in LAYERS:
            kind = layer.get("type") if isinstance(layer, dict) else layer
            raise DesignError(f"layer {number}: {kind!r} is not an allowed layer type; allowed: " + ", ".join(LAYERS))
        allowed = LAYERS[layer["type"]]
        for name, value in layer.items():
            if name == "type":
                continue
            if name not in allowed:
                raise DesignError(
                    f"layer {number} ({layer['type']}): unknown field {name!r}"
                    + (f"; it takes {', '.join(allowed)}" if allowed else "; it takes none")
                )
            low, high = allowed[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise DesignError(
                    f"layer {number} ({layer['type']}): {name} must be an integer from {low} to {high}, not {value!r}"
                )
        for name in REQUIRED.get(layer["type"], ()):
            if name not in layer:
                raise DesignError(f"layer {number} ({layer['type']}): {name} is required")
    return layers


def native_design(*, depth: int, width: int, dropout: float) -> dict:
    """The native CNN: ``depth`` blocks of convolution, batch norm, ReLU and 2× max pooling (channels
    ``width``, doubling per block, at most 512), half of ``dropout`` after each block (whole channels),
    then global average pooling."""
    layers: list[dict] = []
    for block in range(depth):
        layers += [
            {"type": "conv", "out": min(512, width * 2**block), "kernel": 3},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "maxpool", "size": 2},
        ]
        if round(dropout * 50):
            layers.append({"type": "dropout", "percent": min(90, round(dropout * 50))})
    return {"layers": [*layers, {"type": "global_avg_pool"}]}


def resnet_design(widths: tuple[int, ...] = (16, 32, 64)) -> dict:
    """A small ResNet-style backbone: a 3×3 stem, one residual block per width (each after the first
    halves the image), global average pooling."""
    layers: list[dict] = [{"type": "conv", "out": widths[0], "kernel": 3}, {"type": "batchnorm"}, {"type": "relu"}]
    for index, width in enumerate(widths):
        layers.append({"type": "residual", "out": width, "stride": 1 if index == 0 else 2})
    return {"layers": [*layers, {"type": "global_avg_pool"}]}
