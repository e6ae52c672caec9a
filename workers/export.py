"""Verified export of a fine-tuned model: the adapter, a merged model, or GGUF; an image
classifier as TorchScript or ONNX (``workers.vision.export``).

Every export is reloaded the way a user would load it and its greedy output on a few
prompts is compared with the source model's (the base model with the adapter applied); an
image classifier's probabilities on a few images are compared with the source classifier's.
An export that does not match is reported as failed, with the reason; it is never offered.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from workers.events import Emit, LogLine, Progress
from workers.loading import is_full_model, model_load, tokenizer_load

TEXT_KINDS = ("adapter", "merged", "gguf")  # a language model's
VISION_KINDS = ("torchscript", "onnx")  # an image classifier's
KINDS = TEXT_KINDS + VISION_KINDS
GGUF_QUANTIZATIONS = ("f32", "f16", "q8_0")
# GGUF files are written for these Hugging Face architectures only (llama.cpp's "llama").
GGUF_MODEL_TYPES = ("llama", "mistral")

DEFAULT_PROMPTS = (
    "Classify the sentence: The team won the match in the final minute.",
    "What is the capital of France?",
    "Summarize the following text: It will rain tomorrow with strong wind.",
)


@dataclass(frozen=True)
class ExportConfig:
    """Export of one fine-tuned model, verified against its source.

    base_model_path: local directory of the base model (no default).
    adapter_path: local directory the training run saved: a PEFT adapter, or a whole model
        for full fine-tuning (then it is the source on its own) (no default).
    output_dir: local directory the export is written into; created if missing (no default).
    kind: "adapter" (the PEFT adapter as is), "merged" (adapter merged into the base,
        safetensors) or "gguf" (one .gguf file for llama.cpp); default "merged".
    quantization: for gguf, "f32", "f16" or "q8_0" (8-bit blocks; tensors whose rows are
        not a multiple of 32 stay f16, norms stay f32, as llama.cpp does); ignored for the
        other kinds, which keep float32; default "f16".
    prompts: prompts whose greedy continuations are compared (rendered with the
        tokenizer's chat template when it has one); default three short prompts.
    max_new_tokens: tokens generated per prompt for the comparison; default 8.
    lossy_prefix_tokens: for f16 and q8_0, how many first generated tokens must be equal
        (the rest may drift once a near-tie flips); default 1.
    logits_tolerance: largest absolute difference allowed between the source's and the
        export's next-token logits at the first step, per quantization (lossless exports
        must also match token for token); default f32 1e-3, f16 5e-2, q8_0 2.5e-1.
    model_card: the model card (Markdown), written as README.md into an adapter, merged,
        torchscript or onnx export and as ``general.description`` into a GGUF file; default "" (none).
    images_archive / images_archive_name / images: torchscript and onnx: the local archive (and its
        uploaded name: ZIP or tar) holding the images the export is checked on, and their names in it;
        default none (images of random pixels, seeded).
    probability_tolerance: torchscript and onnx: largest absolute difference allowed between the
        source's and the export's class probabilities on an image (the best class must be the same);
        default 1e-4.

    For torchscript and onnx, ``adapter_path`` is the classifier's directory (``vision.json`` and
    ``model.safetensors``) and ``base_model_path`` is not read.
    """

    base_model_path: str
    adapter_path: str
    output_dir: str
    kind: str = "merged"
    quantization: str = "f16"
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    max_new_tokens: int = 8
    lossy_prefix_tokens: int = 1
    logits_tolerance: dict = field(default_factory=lambda: {"f32": 1e-3, "f16": 5e-2, "q8_0": 2.5e-1})
    model_card: str = ""
    images_archive: str = ""
    images_archive_name: str = ""
    images: tuple[str, ...] = ()
    probability_tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "gguf" and self.quantization not in GGUF_QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {GGUF_QUANTIZATIONS}, not {self.quantization!r}")
        if not self.prompts or self.max_new_tokens < 1:
            raise ValueError("at least one prompt and one new token are needed to verify")

    @property
    def precision(self) -> str:
        """The precision the export's weights are kept in ("f32" unless a GGUF says otherwise)."""
        return self.quantization if self.kind == "gguf" else "f32"


@dataclass(frozen=True)
class ExportResult:
    """What an export produced and how its verification went.

    path: the exported directory (adapter, merged) or .gguf file; "" when writing failed.
    verified: True when the reloaded export matched the source on every prompt.
    error: why verification failed (or writing did); "" when verified.
    details: per-prompt comparison (source and export tokens, max logit difference) and
        the tolerance applied; stored next to the export for the user to see.
    size_bytes: bytes on disk of the export.
    """

    path: str
    verified: bool
    error: str = ""
    details: dict = field(default_factory=dict)
    size_bytes: int = 0


class VerificationError(Exception):
    """The reloaded export does not behave like its source."""


def run_export(config: ExportConfig, emit: Emit) -> ExportResult:
    """Write the export ``config`` asks for, reload it and compare it with the source.

    Reports three ``Progress`` steps (source loaded, export written, export verified) and
    ``LogLine``s. A failed verification is returned (``verified=False`` with the reason),
    not raised; errors that leave no export (a missing directory, an unsupported
    architecture for GGUF) raise.
    """
    if config.kind in VISION_KINDS:
        from workers.vision.export import run_vision_export

        return run_vision_export(config, emit)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    emit(LogLine(f"Exporting {config.kind}" + (f" ({config.quantization})" if config.kind == "gguf" else "")))
    tokenizer = _source_tokenizer_load(config)
    source = _source_model_load(config)
    reference = _reference(source, tokenizer, config)
    emit(Progress(1, 3))
    path = _write(config, source, tokenizer, output)
    del source
    emit(LogLine(f"Wrote {path.name} ({_size(path)} bytes); verifying"))
    emit(Progress(2, 3))
    result = export_verify(config, path, reference=reference)
    emit(Progress(3, 3))
    emit(LogLine("Export verified" if result.verified else f"Verification failed: {result.error}",
                 level="info" if result.verified else "error"))
    return result


def export_verify(config: ExportConfig, path: Path | str, *, reference: dict | None = None) -> ExportResult:
    """Reload the export at ``path`` and compare it with the source model ``config`` names.

    ``reference`` (the source's outputs) is computed when not given.
    """
    path = Path(path)
    tokenizer = _source_tokenizer_load(config)
    if reference is None:
        reference = _reference(_source_model_load(config), tokenizer, config)
    tolerance = float(config.logits_tolerance[config.precision])
    details = {"precision": config.precision, "logits_tolerance": tolerance, "prompts": []}
    try:
        # as a user would load it: the export's own tokenizer, and the adapter on the base model
        model = model_load(config.base_model_path, adapter_path=str(path))
        export_tokenizer = tokenizer_load(str(path))
        _tokenizers_compare(tokenizer, export_tokenizer, reference)
        for prompt, expected in zip(config.prompts, reference["outputs"], strict=True):
            got = _greedy(model, expected["input_ids"], config.max_new_tokens)
            diff = float((got["logits"] - expected["logits"]).abs().max())
            details["prompts"].append({"prompt": prompt, "source_tokens": expected["tokens"],
                                       "export_tokens": got["tokens"], "max_logit_diff": diff})
            _outputs_compare(config, prompt, expected, got, diff, tolerance)
    except Exception as exc:
        return export_result(path, details, failure=exc)
    return export_result(path, details)


def export_result(path: Path, details: dict, *, failure: Exception | None = None) -> ExportResult:
    """The result of checking the export at ``path``: verified, or failed with ``failure``'s reason (a
    ``VerificationError``'s own words; any other error means the export does not even load)."""
    if failure is None:
        return ExportResult(path=str(path), verified=True, details=details, size_bytes=_size(path))
    error = str(failure)
    if not isinstance(failure, VerificationError):
        error = f"the export does not load: {type(failure).__name__}: {error.splitlines()[0] if error else ''}"
    return ExportResult(path=str(path), verified=False, error=error, details=details, size_bytes=_size(path))


def _outputs_compare(config, prompt, expected, got, diff, tolerance) -> None:
    if not diff <= tolerance:  # also catches NaN
        raise VerificationError(f"next-token logits differ by {diff:.3g} (tolerance {tolerance:g}) "
                                f"on prompt {prompt!r}")
    if config.precision == "f32":
        if got["tokens"] != expected["tokens"]:
            raise VerificationError(f"greedy output differs on prompt {prompt!r}: "
                                    f"source {expected['tokens']}, export {got['tokens']}")
        return
    prefix = config.lossy_prefix_tokens
    if got["tokens"][:prefix] != expected["tokens"][:prefix]:
        raise VerificationError(f"first {prefix} greedy tokens differ on prompt {prompt!r}: "
                                f"source {expected['tokens'][:prefix]}, export {got['tokens'][:prefix]}")


def _tokenizers_compare(source, exported, reference) -> None:
    for text, expected in zip(reference["texts"], reference["outputs"], strict=True):
        ids = exported(text, add_special_tokens=False)["input_ids"]
        if ids != expected["input_ids"]:
            raise VerificationError(f"the exported tokenizer encodes {text!r} differently: {ids} != "
                                    f"{expected['input_ids']}")
    if (source.chat_template or None) != (getattr(exported, "chat_template", None) or None):
        raise VerificationError("the exported tokenizer lost the chat template")


# --- source --------------------------------------------------------------------------------


def _source_model_load(config: ExportConfig):
    """The model the export must reproduce: base + adapter (unmerged), or the full model; float32."""
    return model_load(config.base_model_path, adapter_path=config.adapter_path)


def _source_tokenizer_load(config: ExportConfig):
    return tokenizer_load(config.base_model_path, adapter_path=config.adapter_path)


def _prompt_text(tokenizer, prompt: str) -> str:
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
    return prompt


def _reference(model, tokenizer, config: ExportConfig) -> dict:
    texts = [_prompt_text(tokenizer, p) for p in config.prompts]
    outputs = []
    for text in texts:
        input_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        outputs.append({"input_ids": input_ids, **_greedy(model, input_ids, config.max_new_tokens)})
    return {"texts": texts, "outputs": outputs}


def _greedy(model, input_ids: list[int], max_new_tokens: int) -> dict:
    """Greedy decoding by hand (no generation config, EOS or padding can differ between exports)."""
    import torch

    ids = torch.tensor([input_ids])
    tokens, first_logits = [], None
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids).logits[0, -1].float()
            first_logits = logits if first_logits is None else first_logits
            token = int(logits.argmax())
            tokens.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return {"tokens": tokens, "logits": first_logits}


# --- writing -------------------------------------------------------------------------------


def _write(config: ExportConfig, source, tokenizer, output: Path) -> Path:
    if config.kind == "adapter":
        return _card_write(config, _adapter_write(config, output / "adapter"))
    merged = _merged(config, source)
    if config.kind == "merged":
        target = output / "merged"
        merged.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        return _card_write(config, target)
    return gguf_write(merged, tokenizer, output / f"model-{config.quantization}.gguf", config.quantization,
                      description=config.model_card)


def _card_write(config: ExportConfig, target: Path) -> Path:
    """The model card as README.md (what the Hugging Face Hub shows) in an exported directory."""
    if config.model_card:
        (target / "README.md").write_text(config.model_card, encoding="utf-8")
    return target


def _adapter_write(config: ExportConfig, target: Path) -> Path:
    if is_full_model(config.adapter_path):
        raise ValueError("this model was fully fine-tuned: it has no adapter; export it merged or as GGUF")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(config.adapter_path, target)
    return target


def _merged(config: ExportConfig, source):
    """The source with the adapter folded into its weights (a fresh copy: the source stays unmerged)."""
    if is_full_model(config.adapter_path):
        return source
    return model_load(config.base_model_path, adapter_path=config.adapter_path, merged=True)


# --- GGUF ----------------------------------------------------------------------------------


def gguf_write(model, tokenizer, target: Path, quantization: str, *, description: str = "") -> Path:
    """Write a Llama-family ``model`` and its byte-level BPE ``tokenizer`` as one GGUF file.

    Follows llama.cpp's ``convert_hf_to_gguf.py`` for "llama": tensor names, the Q/K
    permutation for its rotary layout, and the tokenizer as ``gpt2`` (byte-level BPE)
    metadata with merges, special token ids and the chat template. ``description`` (the model
    card) goes into ``general.description``: a single file has no room for a README.
    """
    import gguf
    import numpy as np

    cfg = model.config
    if cfg.model_type not in GGUF_MODEL_TYPES:
        raise ValueError(f"GGUF export supports Llama-family models, not {cfg.model_type!r}")
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError("GGUF export needs a fast (tokenizer.json) tokenizer")
    tokenizer_model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if tokenizer_model.get("type") != "BPE":
        raise ValueError(f"GGUF export supports byte-level BPE tokenizers, not {tokenizer_model.get('type')}")

    target.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(target), "llama")
    _gguf_metadata(writer, cfg, quantization)
    if description:
        writer.add_description(description)
    _gguf_tokenizer(writer, tokenizer, tokenizer_model)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    for name, tensor in model.state_dict().items():
        gguf_name = _gguf_name(name, cfg)
        if gguf_name is None:
            continue
        data = tensor.detach().float().cpu().numpy()
        if gguf_name.endswith("attn_q.weight"):
            data = _permute(data, heads, heads)
        elif gguf_name.endswith("attn_k.weight"):
            data = _permute(data, heads, kv_heads)
        _gguf_tensor_add(writer, gguf_name, np.ascontiguousarray(data), quantization)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _gguf_metadata(writer, cfg, quantization: str) -> None:
    import gguf

    rope = getattr(cfg, "rope_parameters", None) or {}
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_name(getattr(cfg, "_name_or_path", "") or "finetune-export")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quantization]
    writer.add_file_type(file_type)


def _gguf_tokenizer(writer, tokenizer, tokenizer_model: dict) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_name(name: str, cfg) -> str | None:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        # A tied head is the embedding; llama.cpp (and transformers) read it from token_embd.
        return None if cfg.tie_word_embeddings else "output.weight"
    if name.startswith("model.layers."):
        index, rest = name.removeprefix("model.layers.").split(".", 1)
        if rest in _LAYER_NAMES:
            return f"blk.{index}.{_LAYER_NAMES[rest]}"
    if name.endswith("rotary_emb.inv_freq"):
        return None
    raise ValueError(f"no GGUF name for tensor {name!r}")


def _permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's rotary layout for Q/K rows (the inverse of transformers' reverse permute)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _gguf_tensor_add(writer, name: str, data, quantization: str) -> None:
    import gguf
    import numpy as np

    if data.ndim == 1 or quantization == "f32":
        writer.add_tensor(name, data.astype(np.float32))
        return
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if quantization == "q8_0" and data.shape[-1] % block == 0:
        quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        return
    writer.add_tensor(name, data.astype(np.float16))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
