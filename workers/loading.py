"""Load a tokenizer and a model: the base alone, the base with an adapter, or a whole model.

Training, evaluation, export, inference, estimates, statistics and preparation all load through
here. What a fine-tuning output (``adapter_path``) holds is told by its files:

- a PEFT adapter (``adapter_config.json``): applied to the base model;
- a whole model (``config.json`` and no ``adapter_config.json``: full fine-tuning or a merged
  export): loaded on its own, the base model is not read;
- a ``.gguf`` file: loaded on its own through transformers' GGUF reader;
- a sharded checkpoint of full fine-tuning (``pytorch_model_fsdp_0/``, one part per rank, as FSDP
  writes it): the base model with those weights read into it, in one process.

The tokenizer saved with the fine-tuning output wins over the base model's: it carries the chat
template the model was trained with. What cannot be loaded raises ``ModelLoadError`` naming it.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from workers.templates import tokenizer_prepare

if TYPE_CHECKING:  # torch and transformers load only when a model does
    import torch
    from transformers import PreTrainedTokenizerBase

ADAPTER, FULL, GGUF, SHARDED = "adapter", "full", "gguf", "sharded"
FSDP_WEIGHTS = "pytorch_model_fsdp_0"  # accelerate's folder of a sharded checkpoint's weights


class ModelLoadError(Exception):
    """A model, adapter or tokenizer could not be loaded from its path or hub id."""


def is_full_model(path: Path | str) -> bool:
    """Whether a fine-tuning output is a whole model (full fine-tuning, a merged export or a GGUF
    file) rather than an adapter to apply to its base model."""
    return _kind(path) != ADAPTER


def tokenizer_load(model_path: str, *, adapter_path: str | None = None,
                   template: str = "") -> "PreTrainedTokenizerBase":
    """The tokenizer of ``model_path`` fine-tuned as ``adapter_path``, with ``template`` set.

    The tokenizer saved with ``adapter_path`` (or inside its GGUF file) is used when there is one.
    A tokenizer without a pad token pads with its end-of-sequence token. ``template``: "" keeps the
    tokenizer's chat template; a name in ``workers.templates`` sets that one.
    """
    from transformers import AutoTokenizer

    path = adapter_path if adapter_path and _has_tokenizer(adapter_path) else model_path
    where, extra = _pretrained_args(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_failure("the tokenizer of", path, exc)) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer_prepare(tokenizer, template)  # saved with the adapter: inference prompts as trained


def model_load(base_path: str, *, adapter_path: str | None = None, merged: bool = False,
               dtype: "torch.dtype | None" = None, quantization: str | None = None,
               for_training: bool = False, checkpointing: bool = False) -> "torch.nn.Module":
    """The model at ``base_path`` with the adapter at ``adapter_path`` applied, or the whole model there.

    adapter_path: a PEFT adapter, a whole model directory or a ``.gguf`` file (see the module
        docstring); default None, the base model alone.
    merged: fold the adapter into the weights (a plain transformers model is returned); default False.
    dtype: torch dtype of the weights; default float32.
    quantization: QLoRA's bitsandbytes settings: "nf4" (4-bit NormalFloat, double quantized,
        computing in ``dtype``) or "int8" (8-bit weights); default None, unquantized.
    for_training: for a trainer (which sets the mode): an adapter trainable, a quantized model
        prepared for k-bit training; default False, the model in eval mode.
    checkpointing: a quantized model prepared with gradient checkpointing (the job's
        ``gradient_checkpointing``: it costs time and saves memory); default False.
    """
    import torch

    dtype = dtype or torch.float32
    kind = _kind(adapter_path) if adapter_path else None
    options = {"dtype": dtype, "quantization_config": _quantization(quantization, dtype)}
    if kind in (FULL, GGUF):
        model = _pretrained(adapter_path, "model", options)
    else:
        model = _pretrained(base_path, "base model", options)
    if kind == SHARDED:
        _sharded_weights_read(model, Path(adapter_path) / FSDP_WEIGHTS)
    if kind == ADAPTER:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=for_training)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_failure("adapter", adapter_path, exc)) from exc
        if merged:
            model = model.merge_and_unload()
    if quantization and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    return model if for_training else model.eval()


def _kind(path: Path | str) -> str:
    path = Path(path)
    if path.suffix == ".gguf" and path.is_file():
        return GGUF
    if (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        return FULL
    if (path / FSDP_WEIGHTS).is_dir() and not (path / "adapter_config.json").exists():
        return SHARDED
    return ADAPTER


def _sharded_weights_read(model, folder: Path) -> None:
    """Read the parts of a sharded checkpoint (torch.distributed.checkpoint, under the key "model")
    into ``model``'s weights, in this one process. Every weight must be there."""
    import torch.distributed.checkpoint as dcp

    state = {"model": model.state_dict()}
    try:
        saved = set(dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata)
        missing = [name for name in state["model"] if f"model.{name}" not in saved]
        if missing:
            raise ModelLoadError(f"the checkpoint {str(folder.parent)!r} holds {len(saved)} sharded weights, not the "
                                 f"whole model ({missing[0]} is not there)")
        dcp.load(state, checkpoint_id=str(folder))
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(_failure("sharded checkpoint", str(folder), exc)) from exc
    model.load_state_dict(state["model"])


def _has_tokenizer(path: str) -> bool:
    return _kind(path) == GGUF or (Path(path) / "tokenizer_config.json").exists()


def _pretrained_args(path: str) -> tuple:
    """``from_pretrained``'s arguments for ``path``: a directory or hub id, or a GGUF file in its folder."""
    if _kind(path) == GGUF:
        return str(Path(path).parent), {"gguf_file": Path(path).name}
    return str(path), {}


def _pretrained(path: str, what: str, options: dict):
    from transformers import AutoModelForCausalLM

    where, extra = _pretrained_args(path)
    try:
        return AutoModelForCausalLM.from_pretrained(where, **extra, **options)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_failure(what, path, exc)) from exc


def _quantization(quantization: str | None, dtype):
    """bitsandbytes settings for QLoRA: 4-bit NF4 (double quantized) or 8-bit weights."""
    if not quantization:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _failure(what: str, path: str, exc: Exception) -> str:
    hint = ""
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not Path(path).is_absolute():
        hint = " HF_HUB_OFFLINE=1 is set: put the model in HF_HOME first or register a local path."
    return f"could not load {what} {str(path)!r}: {(str(exc).splitlines() or [''])[0]}{hint}"
