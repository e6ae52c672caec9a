"""A job's promotion gate: checked when the job is created, applied by the registry after its
evaluation (``models_app.services.evaluations``)."""

import re

from finetune_site.errors import InvalidRequest

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
GATE_KEYS = {"metric", "min_improvement", "threshold", "alias"}


def alias_check(alias, *, param: str = "alias") -> None:
    """An alias is a lower-case word that cannot be mistaken for a version (``v3``)."""
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias) or re.fullmatch(r"v\d+", alias):
        raise InvalidRequest("alias must be lower-case letters, digits, - or _ (starting with a letter, up to 50), "
                             "and not v<number> (that names a version)", param=param)


# what an image classifier's held-out evaluation measures (``workers.vision.evaluation``)
VISION_GATE_METRICS = ("accuracy", "macro_f1")


def promotion_gate_check(gate: dict | None, *, has_validation: bool, vision: bool = False) -> dict:
    """The normalised gate of a job: ``{metric, min_improvement | threshold, alias}``, or {} for none. A
    vision job's gate is a threshold on its held-out evaluation (its classifier has no base to beat)."""
    from workers.evaluation import METRICS

    if not gate:
        return {}
    if not isinstance(gate, dict):
        raise InvalidRequest("promotion_gate must be an object like {\"metric\": \"eval_loss\", "
                             "\"min_improvement\": 0.05}", param="promotion_gate")
    unknown = sorted(set(gate) - GATE_KEYS)
    if unknown:
        raise InvalidRequest(f"promotion_gate has unknown key {unknown[0]!r}; known: {', '.join(sorted(GATE_KEYS))}",
                             param="promotion_gate")
    if vision:
        return _vision_gate_check(gate)
    metric = gate.get("metric", "eval_loss")
    if metric not in METRICS:
        raise InvalidRequest(f"promotion_gate.metric must be one of {', '.join(METRICS)}",
                             param="promotion_gate.metric")
    return _gate_normal(gate, metric, has_validation=has_validation)


def _vision_gate_check(gate: dict) -> dict:
    metric = gate.get("metric", "accuracy")
    if metric not in VISION_GATE_METRICS:
        raise InvalidRequest(f"promotion_gate.metric of a vision job must be one of {', '.join(VISION_GATE_METRICS)} "
                             "(measured on its held-out images)", param="promotion_gate.metric")
    if gate.get("threshold") is None or gate.get("min_improvement") is not None:
        raise InvalidRequest("a vision job's classifier has no base model to improve on: give promotion_gate."
                             "threshold (e.g. 0.9) instead of min_improvement", param="promotion_gate.threshold")
    return _gate_normal(gate, metric, has_validation=True)


def _gate_normal(gate: dict, metric: str, *, has_validation: bool) -> dict:
    if not has_validation:
        raise InvalidRequest("a promotion gate compares base and tuned on the validation file: give validation_file",
                             param="promotion_gate")
    normal = {"metric": metric, "alias": gate.get("alias", "production")}
    alias_check(normal["alias"], param="promotion_gate.alias")
    for key in ("min_improvement", "threshold"):
        if gate.get(key) is not None:
            value = gate[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) > 1e12:
                raise InvalidRequest(f"promotion_gate.{key} must be a finite number", param=f"promotion_gate.{key}")
            normal[key] = float(value)
    if "threshold" not in normal:
        normal.setdefault("min_improvement", 0.0)
    return normal
