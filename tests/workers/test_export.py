"""Verified export on the tiny local model, on CPU, without Django."""

import json
import struct
from pathlib import Path

import pytest

from workers.events import LogLine, Progress
from workers.export import ExportConfig, export_verify, run_export
from workers.sample_data import classification_rows

PROMPTS = tuple(r["messages"][0]["content"] for r in classification_rows(24)[:3])


@pytest.fixture
def adapter(trained_adapter) -> Path:
    """An adapter that learned the classification task (so greedy output is not just <|end|>)."""
    return trained_adapter


def _config(tiny_model_path, adapter, tmp_path, **overrides) -> ExportConfig:
    values = dict(base_model_path=str(tiny_model_path), adapter_path=str(adapter), output_dir=str(tmp_path / "export"),
                  prompts=PROMPTS, max_new_tokens=4)
    return ExportConfig(**{**values, **overrides})


def _greedy_ids(model, tokenizer, prompt: str) -> list[int]:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return output[0][inputs["input_ids"].shape[1]:].tolist()


def test_merged_export_is_token_identical_to_base_with_adapter(tiny_model_path, adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    events = []
    result = run_export(_config(tiny_model_path, adapter, tmp_path, kind="merged"), events.append)
    assert result.verified, result.error
    assert [e.step for e in events if isinstance(e, Progress)] == [1, 2, 3]
    assert any(isinstance(e, LogLine) and e.message == "Export verified" for e in events)
    merged_dir = Path(result.path)
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()

    # Checked again here with transformers' own generate, independently of the verifier.
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    source = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), adapter)
    outputs = [_greedy_ids(merged, tokenizer, p) for p in PROMPTS]
    assert outputs == [_greedy_ids(source, tokenizer, p) for p in PROMPTS]
    labels = [r["messages"][1]["content"] for r in classification_rows(24)[:3]]
    assert [tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs] == labels


def test_adapter_export_is_the_adapter_and_verifies(tiny_model_path, adapter, tmp_path):
    result = run_export(_config(tiny_model_path, adapter, tmp_path, kind="adapter"), lambda e: None)
    assert result.verified, result.error
    exported = Path(result.path)
    assert (exported / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    assert all(p["source_tokens"] == p["export_tokens"] for p in result.details["prompts"])


def test_gguf_f32_round_trip_greedy_output_equals_merged_model(tiny_model_path, adapter, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = run_export(_config(tiny_model_path, adapter, tmp_path, kind="merged"), lambda e: None)
    result = run_export(_config(tiny_model_path, adapter, tmp_path, kind="gguf", quantization="f32"), lambda e: None)
    assert result.verified, result.error
    gguf_path = Path(result.path)
    assert gguf_path.suffix == ".gguf" and gguf_path.read_bytes()[:4] == b"GGUF"

    merged_model = AutoModelForCausalLM.from_pretrained(merged.path)
    merged_tokenizer = AutoTokenizer.from_pretrained(merged.path)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    assert gguf_tokenizer.chat_template == merged_tokenizer.chat_template
    for prompt in PROMPTS:
        text = f"{prompt} <|end|> Ünïcode ✓"
        assert gguf_tokenizer(text)["input_ids"] == merged_tokenizer(text)["input_ids"]
        assert _greedy_ids(gguf_model, gguf_tokenizer, prompt) == _greedy_ids(merged_model, merged_tokenizer, prompt)


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_lossy_gguf_is_verified_within_tolerance(tiny_model_path, adapter, tmp_path, quantization):
    result = run_export(_config(tiny_model_path, adapter, tmp_path, kind="gguf", quantization=quantization),
                        lambda e: None)
    assert result.verified, result.error
    assert Path(result.path).name == f"model-{quantization}.gguf"
    diffs = [p["max_logit_diff"] for p in result.details["prompts"]]
    assert 0 < max(diffs) <= result.details["logits_tolerance"]
    assert all(p["source_tokens"][:1] == p["export_tokens"][:1] for p in result.details["prompts"])


def test_corrupted_gguf_is_caught_by_verification(tiny_model_path, adapter, tmp_path):
    from gguf import GGUFReader

    config = _config(tiny_model_path, adapter, tmp_path, kind="gguf", quantization="f32")
    path = Path(run_export(config, lambda e: None).path)
    tensor = next(t for t in GGUFReader(path).tensors if t.name == "blk.1.attn_v.weight")
    _flip_bytes(path, int(tensor.data_offset), int(tensor.n_bytes))

    result = export_verify(config, path)
    assert not result.verified
    assert "differ" in result.error


def test_corrupted_merged_model_is_caught_by_verification(tiny_model_path, adapter, tmp_path):
    config = _config(tiny_model_path, adapter, tmp_path, kind="merged")
    path = Path(run_export(config, lambda e: None).path) / "model.safetensors"
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    start, end = header["model.layers.0.mlp.down_proj.weight"]["data_offsets"]
    _flip_bytes(path, 8 + length + start, end - start)

    result = export_verify(config, path.parent)
    assert not result.verified and "differ" in result.error


def test_unloadable_export_fails_with_the_reason(tiny_model_path, adapter, tmp_path):
    config = _config(tiny_model_path, adapter, tmp_path, kind="gguf", quantization="f32")
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    result = export_verify(config, path)
    assert not result.verified and result.error.startswith("the export does not load")


def test_config_rejects_unknown_kind_and_quantization(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        ExportConfig(base_model_path="b", adapter_path="a", output_dir=str(tmp_path), kind="tflite")
    with pytest.raises(ValueError, match="quantization"):
        ExportConfig(base_model_path="b", adapter_path="a", output_dir=str(tmp_path), kind="gguf", quantization="q4")


def _flip_bytes(path: Path, offset: int, length: int) -> None:
    """Invert every bit of ``length`` bytes at ``offset``, as a bad disk or a broken writer would."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = handle.read(length)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


def test_fully_fine_tuned_model_exports_gguf_but_has_no_adapter(tiny_model_path, tmp_path):
    # A full fine-tune saves a whole model where the adapter would be; the base model stands in for one.
    config = _config(tiny_model_path, tiny_model_path, tmp_path, kind="gguf", quantization="f32")
    result = run_export(config, lambda e: None)
    assert result.verified, result.error
    with pytest.raises(ValueError, match="no adapter"):
        run_export(_config(tiny_model_path, tiny_model_path, tmp_path, kind="adapter"), lambda e: None)
