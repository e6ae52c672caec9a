"""Fetching and describing a base model's files, without Django and without the network."""

import io
import tarfile
import time
import zipfile

import pytest

from workers.loading import ModelLoadError
from workers.model_files import archive_unpack, hub_fetch


def test_an_unreachable_hub_fails_within_seconds(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="could not download 'org/model' at v1 from the hub"):
        hub_fetch("org/model", revision="v1", cache_dir=str(tmp_path), endpoint="http://127.0.0.1:9")
    assert time.monotonic() - started < 30


def _tar(path, member: tarfile.TarInfo, data: bytes = b"") -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return str(path)


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("member", [_file("../up.txt"), _file("/abs.txt"), _file("a/../../up.txt"),
                                    _link("config.json", "/etc/passwd")])
def test_a_tar_member_that_would_land_outside_is_refused(tmp_path, member):
    archive = _tar(tmp_path / "m.tar.gz", member, b"x" if member.isfile() else b"")
    with pytest.raises(ModelLoadError, match="outside the model directory|link or special file"):
        archive_unpack(archive, str(tmp_path / "out" / "model"))
    assert not (tmp_path / "out" / "model").exists() and not (tmp_path / "up.txt").exists()


def test_a_zip_member_that_would_land_outside_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as bundle:
        bundle.writestr("config.json", "{}")
        bundle.writestr("../up.txt", "x")
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        archive_unpack(str(tmp_path / "m.zip"), str(tmp_path / "out"))
    assert not (tmp_path / "up.txt").exists()


def test_an_archive_of_one_folder_unpacks_to_that_folder(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as bundle:
        bundle.writestr("my-model/config.json", "{}")
    assert archive_unpack(str(tmp_path / "m.zip"), str(tmp_path / "out")) == str(tmp_path / "out" / "my-model")


def test_a_lora_trains_on_a_non_llama_family(tiny_families, tmp_path):
    from workers.config import TrainConfig
    from workers.sample_data import classification_write
    from workers.training import run_training

    train = classification_write(tmp_path / "train.jsonl", 8)
    config = TrainConfig(model_path=str(tiny_families["qwen2"]), train_file=str(train),
                         output_dir=str(tmp_path / "out"), n_epochs=1, batch_size=4)
    result = run_training(config, lambda event: None)
    assert result.steps == 2 and result.train_loss > 0
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma", "phi"])
def test_each_family_trains_evaluates_exports_and_answers(tiny_families, tmp_path, family):
    """A base model of each family, built locally: a LoRA trains on it, the evaluation scores base and
    tuned, the merged export verifies against the source (GGUF where llama.cpp's "llama" writer fits the
    family, refused by name otherwise), and the tuned model answers a chat turn."""
    from workers.config import TrainConfig
    from workers.evaluation import EvalConfig, EvalTarget, run_evaluation
    from workers.export import GGUF_MODEL_TYPES, ExportConfig, run_export
    from workers.inference import GenerateConfig, generate, inference_model_load
    from workers.sample_data import classification_write
    from workers.training import run_training

    base = str(tiny_families[family])
    train = classification_write(tmp_path / "train.jsonl", 8)
    trained = run_training(TrainConfig(model_path=base, train_file=str(train), output_dir=str(tmp_path / "out"),
                                       n_epochs=1, batch_size=4, learning_rate=1e-3), lambda event: None)
    adapter = trained.adapter_dir
    valid = classification_write(tmp_path / "valid.jsonl", 2, seed=3)
    scored = run_evaluation(EvalConfig(base_model_path=base, data_file=str(valid), max_new_tokens=2,
                                       targets=(EvalTarget("base"), EvalTarget("tuned", adapter))), lambda e: None)
    assert scored.metrics["tuned"]["eval_loss"] != scored.metrics["base"]["eval_loss"]
    for kind in ("merged", "gguf"):
        config = ExportConfig(base_model_path=base, adapter_path=adapter, kind=kind, quantization="f32",
                              output_dir=str(tmp_path / kind), max_new_tokens=2)
        if kind == "gguf" and family not in GGUF_MODEL_TYPES:
            with pytest.raises(ValueError, match=f"not {family!r}"):
                run_export(config, lambda e: None)
        else:
            exported = run_export(config, lambda e: None)
            assert exported.verified, exported.error
    reply = generate(inference_model_load(base, adapter), GenerateConfig(
        messages=({"role": "user", "content": "Classify: The team won."},), temperature=0, max_tokens=3))
    assert reply.completion_tokens > 0
