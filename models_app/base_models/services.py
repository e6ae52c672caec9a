"""Writes for base models, and where the engine finds one on disk."""

from pathlib import Path

from django.conf import settings

from models_app.base_models.models import BUILTIN_PREFIX, BaseModel

TINY_LLAMA = "tiny-llama"


def base_model_builtin_ensure() -> BaseModel:
    """Make sure the built-in ``tiny-llama`` is registered (its files are built on first use)."""
    from workers.tiny_model import CHAT_TEMPLATE, PARAMETERS

    model, _ = BaseModel.objects.get_or_create(
        name=TINY_LLAMA,
        defaults={
            "source": BUILTIN_PREFIX + TINY_LLAMA,
            "family": "llama",
            "chat_template": CHAT_TEMPLATE,
            "context_length": 2048,
            "parameters": PARAMETERS,
        },
    )
    return model


def base_model_local_path(base_model: BaseModel) -> str:
    """Where the engine loads the model (and its tokenizer) from: built-ins are built on first
    use, others as given (a local path, or a hub id the engine downloads)."""
    if not base_model.is_builtin:
        return base_model.source
    from workers.tiny_model import tiny_model_build

    name = base_model.source.removeprefix(BUILTIN_PREFIX)
    if name != TINY_LLAMA:
        raise ValueError(f"unknown built-in model {name!r}")
    return str(tiny_model_build(Path(settings.BASE_MODELS_DIR) / name))
