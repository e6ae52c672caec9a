"""The one loader of tokenizers and models, on the tiny local model, on CPU, without Django."""

import pytest

from workers.loading import ModelLoadError, is_full_model, model_load, tokenizer_load
from workers.templates import TEMPLATES


def test_what_cannot_be_loaded_is_named_with_the_offline_hint():
    for load in (tokenizer_load, model_load):
        with pytest.raises(ModelLoadError, match=r"'acme/missing'.*HF_HUB_OFFLINE=1 is set"):
            load("acme/missing")


def test_the_tokenizer_saved_with_the_adapter_wins_over_the_base_models(tiny_model_path, tmp_path):
    adapter = tmp_path / "adapter"
    tokenizer_load(str(tiny_model_path), template="chatml").save_pretrained(adapter)
    assert tokenizer_load(str(tiny_model_path), adapter_path=str(adapter)).chat_template == TEMPLATES["chatml"]
    empty = tmp_path / "no-tokenizer"
    empty.mkdir()
    base = tokenizer_load(str(tiny_model_path), adapter_path=str(empty))
    assert base.chat_template == tokenizer_load(str(tiny_model_path)).chat_template != TEMPLATES["chatml"]


def test_a_tokenizer_without_pad_token_pads_with_eos(tiny_model_path, tmp_path):
    tokenizer = tokenizer_load(str(tiny_model_path))
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "no-pad")
    loaded = tokenizer_load(str(tmp_path / "no-pad"))
    assert loaded.pad_token == loaded.eos_token == "<|end|>"


def test_adapter_is_applied_and_merged_on_request(tiny_model_path, untrained_adapter):
    import torch
    from peft import PeftModel

    ids = torch.tensor([[1, 2, 3]])
    base = model_load(str(tiny_model_path))
    tuned = model_load(str(tiny_model_path), adapter_path=str(untrained_adapter))
    merged = model_load(str(tiny_model_path), adapter_path=str(untrained_adapter), merged=True)
    assert isinstance(tuned, PeftModel) and not isinstance(merged, PeftModel)
    assert not (base.training or tuned.training or merged.training)
    assert base.dtype == torch.float32
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        assert torch.allclose(tuned(input_ids=ids).logits, expected, atol=1e-5)  # B = 0: as the base
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)


def test_a_whole_model_is_loaded_without_its_base(tiny_model_path, untrained_adapter):
    assert is_full_model(tiny_model_path) and not is_full_model(untrained_adapter)
    model = model_load("acme/missing", adapter_path=str(tiny_model_path))
    assert model.config.model_type == "llama" and not model.training
