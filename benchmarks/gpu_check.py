"""The GPU paths, each a few steps through the platform's engine, on a model built locally.

    bash benchmarks/gpu_check.sh        # on a machine with CUDA GPUs

Runs LoRA in bf16 (fp16 where the GPU lacks bf16), QLoRA 4-bit (nf4), full fine-tuning sharded
with FSDP over every GPU, and a 2-process data-parallel run over NCCL, and prints for each its
tokens/s, peak GPU memory and MFU (training FLOPs, 6 x parameters per token, over the bf16 matmul
peak measured on this GPU). Nothing is downloaded: the model is a ~110M-parameter Llama with the
tiny model's tokenizer, built once under the data directory. On a machine without CUDA it says so
and exits with 1: the GPU paths are then untested.
"""

import sys
import tempfile
import time
from pathlib import Path

CHECK_MODEL = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
               "num_attention_heads": 12, "num_key_value_heads": 4, "max_position_embeddings": 2048}
BATCH = 16
ROWS = 30 * BATCH  # short classification chats: one epoch of 30 steps on one GPU


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU paths (bf16, QLoRA 4-bit, FSDP, NCCL) are untested on this machine")
        return 1
    from workers.device import device_detect, device_summary
    from workers.training import fused_kernels

    print(f"devices: {device_summary()}")
    print("fused kernels: " + ("Liger's, on every path" if fused_kernels(device_detect()) else
                               "off (pip install liger-kernel to train with Liger's fused kernels)"))
    peak = matmul_peak_flops()
    print(f"bf16 matmul peak: {peak / 1e12:.0f} TFLOP/s per GPU")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model, parameters = check_model_build(work)
    data = rows_write(work / "train.jsonl")
    gpus = torch.cuda.device_count()
    runs = [("lora bf16", {"adapter": "lora"}, 1),
            ("qlora nf4", {"adapter": "qlora", "quantization": "nf4"}, 1),
            (f"full fsdp x{gpus}", {"adapter": "full", **sharding("fsdp")}, gpus),
            ("lora ddp nccl x2", {"adapter": "lora"}, 2)]
    failed = 0
    for name, options, devices in runs:
        if devices > gpus:
            print(f"{name:<20} skipped: needs {devices} GPUs, {gpus} here")
            continue
        try:
            report(name, train(model, data, work / name.replace(" ", "-"), options, devices), parameters, peak, devices)
        except Exception as exc:  # one broken path must not hide the others' figures
            failed += 1
            print(f"{name:<20} FAILED: {type(exc).__name__}: {exc}")
    return 1 if failed else 0


def sharding(kind: str) -> dict:
    """The ``sharding`` option where this checkout has it (FSDP); plain data parallelism otherwise."""
    from workers.hyperparameters import BY_NAME

    return {"sharding": kind} if "sharding" in BY_NAME else {}


def matmul_peak_flops(size: int = 8192, repeats: int = 20) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def check_model_build(work: Path) -> tuple[str, int]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workers.tiny_model import tiny_model_build

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_build(work / "tiny-llama"))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **CHECK_MODEL)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = work / "check-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), sum(p.numel() for p in model.parameters())


def rows_write(path: Path) -> str:
    from workers.sample_data import classification_write

    return str(classification_write(path, ROWS))


def train(model: str, data: str, output: Path, options: dict, devices: int):
    from workers.config import TrainConfig

    config = TrainConfig(model_path=model, train_file=data, output_dir=str(output), n_epochs=1, batch_size=BATCH,
                         learning_rate=1e-4, save_steps=0, devices=devices, **options)
    if devices > 1:
        from workers.distributed import run_distributed

        return run_distributed(config, lambda event: None)
    from workers.training import run_training

    return run_training(config, lambda event: None)


def report(name: str, result, parameters: int, peak: float, devices: int) -> None:
    speed = result.step_tokens_per_second or result.tokens_per_second
    mfu = 6 * parameters * speed / (peak * devices)
    print(f"{name:<20} {result.steps} steps, {speed:,.0f} tokens/s, peak memory "
          f"{result.peak_memory_bytes / 2**30:.2f} GiB, MFU {mfu:.1%}, loss {result.train_loss:.3f}")


if __name__ == "__main__":
    sys.exit(main())
