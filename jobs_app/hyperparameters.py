"""Check the hyperparameters a caller sent and resolve every "auto" to a value."""

from typing import Any

from finetune_site.errors import InvalidRequest
from workers.templates import TEMPLATE_NAMES

PARAM = "method.supervised.hyperparameters"  # method.dpo.hyperparameters for DPO jobs
ADAPTERS = ("lora", "qlora", "full")
SMALL_MODEL = 100_000_000


def hyperparameters_resolve(raw: dict | None, *, parameters: int | None, rows: int,
                            context_length: int) -> dict[str, Any]:
    """Return the full, resolved hyperparameters; a bad value raises with its ``param`` named."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(_RULES))
    if unknown:
        raise InvalidRequest(f"unknown hyperparameter {unknown[0]!r}; known: {sorted(_RULES)}",
                             param=f"{PARAM}.{unknown[0]}", code="invalid_hyperparameter")
    values = {name: _checked(name, raw.get(name, "auto")) for name in _RULES}
    adapter = values["adapter"] if values["adapter"] != "auto" else "lora"
    small = parameters is not None and parameters < SMALL_MODEL
    if values["max_length"] != "auto" and values["max_length"] > context_length:
        raise InvalidRequest(f"max_length {values['max_length']} is above the model's context of "
                             f"{context_length} tokens", param=f"{PARAM}.max_length",
                             code="invalid_hyperparameter")
    base_lr = {("lora", True): 1e-3, ("lora", False): 2e-4, ("qlora", True): 1e-3, ("qlora", False): 2e-4,
               ("full", True): 1e-4, ("full", False): 2e-5}
    multiplier = _auto(values["learning_rate_multiplier"], 1.0)
    lora_r = _auto(values["lora_r"], 16)
    return {
        # which values were "auto": the data refines some of them once the files are checked
        "auto_resolved": sorted(name for name, value in values.items() if value == "auto"),
        "adapter": adapter,
        "quantization": _auto(values["quantization"], "nf4"),
        "n_epochs": _auto(values["n_epochs"], 3),
        "batch_size": _auto(values["batch_size"], max(1, min(8, rows // 4))),
        "learning_rate_multiplier": multiplier,
        "learning_rate": _auto(values["learning_rate"], base_lr[(adapter, small)] * multiplier),
        "max_length": _auto(values["max_length"], min(1024, context_length)),
        "template": _auto(values["template"], ""),  # "": the base model's own chat template
        "lora_r": lora_r,
        "lora_alpha": _auto(values["lora_alpha"], 2 * lora_r),
        "lora_dropout": _auto(values["lora_dropout"], 0.0),
        "lora_target_modules": _auto(values["lora_target_modules"], ["all-linear"]),
        "logging_steps": _auto(values["logging_steps"], 1),
        "save_steps": _auto(values["save_steps"], 0),
        "eval_steps": _auto(values["eval_steps"], 0),
        "devices": _auto(values["devices"], 1),
        "beta": _auto(values["beta"], 0.1),
    }


def _auto(value, default):
    return default if value == "auto" else value


def _int(low: int, high: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer from {low} to {high} or \"auto\""
        if not low <= value <= high:
            return f"must be from {low} to {high}, not {value}"
        return None
    return check


def _float(low: float, high: float, *, inclusive_low: bool = False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number or \"auto\""
        if value < low or (value == low and not inclusive_low) or value > high:
            return f"must be {'at least' if inclusive_low else 'above'} {low} and at most {high}, not {value}"
        return None
    return check


def _adapter(value):
    return None if value in ADAPTERS else f"must be one of {list(ADAPTERS)}"


def _quantization(value):
    return None if value in ("nf4", "int8") else "must be \"nf4\" (4-bit) or \"int8\" (8-bit)"


def _template(value):
    if value in TEMPLATE_NAMES:
        return None
    return "must be \"auto\" (or \"\", the model's own chat template) or one of " + ", ".join(
        f'"{name}"' for name in TEMPLATE_NAMES if name)


def _targets(value):
    if value == "all-linear":
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return "must be \"all-linear\" or a non-empty list of module names"
    return None


_RULES = {
    "adapter": _adapter,
    "quantization": _quantization,
    "n_epochs": _int(1, 100),
    "batch_size": _int(1, 1024),
    "learning_rate_multiplier": _float(0, 100),
    "learning_rate": _float(0, 1),
    "max_length": _int(16, 1_000_000),
    "template": _template,
    "lora_r": _int(1, 1024),
    "lora_alpha": _int(1, 4096),
    "lora_dropout": _float(0, 1, inclusive_low=True),
    "lora_target_modules": _targets,
    "logging_steps": _int(1, 100_000),
    "save_steps": _int(0, 1_000_000),
    "eval_steps": _int(0, 1_000_000),
    "devices": _int(1, 64),
    "beta": _float(0, 10),
}


def _checked(name: str, value):
    if value == "auto":
        return value
    problem = _RULES[name](value)
    if problem:
        raise InvalidRequest(f"{name} {problem}", param=f"{PARAM}.{name}", code="invalid_hyperparameter")
    return ["all-linear"] if value == "all-linear" else value
