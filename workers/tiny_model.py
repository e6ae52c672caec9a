"""A tiny Llama-architecture model built locally: no download, same code path as a hub model.

The tokenizer is a byte-level BPE trained here with ``tokenizers`` on a small built-in
corpus, so every UTF-8 string encodes. Weights are random (seeded): the model is a
stand-in for a real base model in tests and on machines without one.
"""

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from workers.templates import TOOL_CALLS, tools_block

SPECIAL_TOKENS = ["<|pad|>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]

# Loss only falls on what sits inside {% generation %}: the assistant's turns, its tool calls included.
CHAT_TEMPLATE = (
    tools_block("<|system|>\n", "<|end|>\n")
    + "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}" + TOOL_CALLS + "{{ '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Raised when what is built changes (v2: the template writes tools and tool calls), so a copy built
# by an older version is rebuilt instead of used.
BUILD_VERSION = 2

_CORPUS = """
The quick brown fox jumps over the lazy dog. A user asks a question and the assistant answers.
Classify the sentence as sports, food, weather or music. The team won the match in the final
minute. The soup was hot and the bread was fresh. It will rain tomorrow with strong wind and
clouds. The band played a loud song at the concert. Translate English to French. Summarize the
following text. What is the capital of France? Paris is the capital of France. Numbers: 0 1 2 3
4 5 6 7 8 9 10 100 1000. Yes no maybe true false hello world thanks please good bad positive
negative neutral question answer instruction input output prompt completion system user.
"""

# Parameter count of the built model (checked by a test); lets "auto" settings be resolved
# without building it.
PARAMETERS = 3_044_864

CONFIG = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "vocab_size": 1024,
}


def tiny_model_build(path: Path, *, seed: int = 0) -> Path:
    """Build the tiny model at ``path`` unless it is already complete there; return ``path``.

    Safe to call from several processes at once: a file lock serialises the build, and
    the directory appears atomically (built in a temporary sibling, then renamed).
    """
    path = Path(path)
    if _is_complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_complete(path):
            _build_into(path, seed)
    return path


def _is_complete(path: Path) -> bool:
    if not ((path / "model.safetensors").exists() and (path / "tokenizer.json").exists()):
        return False
    try:
        return json.loads((path / "finetune.json").read_text()).get("version", 1) == BUILD_VERSION
    except (OSError, ValueError):
        return False


def _build_into(path: Path, seed: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        tokenizer = _tokenizer_train()
        tokenizer.save_pretrained(tmp)
        _model_init(tokenizer, seed).save_pretrained(tmp, safe_serialization=True)
        (tmp / "finetune.json").write_text(json.dumps({"built_by": "workers.tiny_model", "version": BUILD_VERSION}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenizer_train():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=CONFIG["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS.split("\n") * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=CONFIG["max_position_embeddings"],
    )


def _model_init(tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        **{**CONFIG, "vocab_size": len(tokenizer)},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


# Other families, as small: (transformers config class, context length). They share the tiny model's
# tokenizer, so they need nothing but this machine to build.
FAMILIES = {
    "llama": ("LlamaConfig", 512),
    "qwen2": ("Qwen2Config", 1024),
    "mistral": ("MistralConfig", 768),
    "gemma": ("GemmaConfig", 256),
    "phi": ("PhiConfig", 640),
}


def tiny_family_build(path: Path, family: str, *, tokenizer_from: Path, seed: int = 0) -> Path:
    """A random 2-layer model of ``family`` (a key of ``FAMILIES``) at ``path``, with the tokenizer
    (and chat template) at ``tokenizer_from``; saved in bfloat16 so its dtype is visible. Returns ``path``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    class_name, context = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    torch.manual_seed(seed)
    config = getattr(transformers, class_name)(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="bfloat16")
    path = Path(path)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
