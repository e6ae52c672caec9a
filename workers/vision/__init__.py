"""Image classification (the objective ``vision``): strategies as plugins over one training loop.

``vision_plan(given, summary, backbone_path=..., designer=...)`` resolves a job's options and picks its
strategy (``auto``: the first of ``STRATEGY_ORDER`` that accepts); ``run_vision_training(config, emit,
should_stop, designer)`` trains it and returns a ``VisionResult`` (the classifier's directory, its
evaluation on the held-out images, the design); ``classify(model_dir, image_bytes)`` ranks the classes of
an image. Django-free, like the rest of ``workers``.
"""

from workers.vision.classifier import (
    CLASSIFIER_ARCHITECTURE,
    ClassifierError,
    classifier_get,
    classify,
    image_check,
    is_classifier,
)
from workers.vision.config import VisionConfig, VisionResult
from workers.vision.data import DatasetSummary, summary_from_manifest, summary_from_stats
from workers.vision.design import Designer
from workers.vision.nets import DesignError
from workers.vision.strategies import (
    STRATEGY_ORDER,
    Strategy,
    config_make,
    run_vision_training,
    strategies,
    vision_plan,
)

__all__ = [
    "STRATEGY_ORDER",
    "ClassifierError",
    "DatasetSummary",
    "DesignError",
    "Designer",
    "Strategy",
    "VisionConfig",
    "VisionResult",
    "CLASSIFIER_ARCHITECTURE",
    "classifier_get",
    "classify",
    "image_check",
    "config_make",
    "is_classifier",
    "run_vision_training",
    "strategies",
    "summary_from_manifest",
    "summary_from_stats",
    "vision_plan",
]
