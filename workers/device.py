"""Which device a run uses and which precision it can afford there."""

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """``kind`` is "cuda" or "cpu"; ``count`` GPUs with ``memory_bytes`` each."""

    kind: str
    count: int
    names: tuple[str, ...] = ()
    memory_bytes: int = 0
    bf16: bool = False
    fp16: bool = False

    def describe(self) -> str:
        if self.kind == "cpu":
            return "CPU"
        gib = self.memory_bytes / 2**30
        return f"{self.count}× {self.names[0]} ({gib:.0f} GiB)"


def device_detect() -> DeviceInfo:
    """Look at the machine: CUDA GPUs when present, the CPU otherwise."""
    import torch

    if not torch.cuda.is_available():
        return DeviceInfo(kind="cpu", count=0)
    count = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    return DeviceInfo(
        kind="cuda",
        count=count,
        names=tuple(torch.cuda.get_device_name(i) for i in range(count)),
        memory_bytes=props.total_memory,
        bf16=torch.cuda.is_bf16_supported(),
        fp16=True,
    )


def device_summary() -> str:
    """One line naming this machine's training device, without importing torch (for status pages).

    GPUs are listed by ``nvidia-smi`` when it is installed; otherwise the CPU and its core count.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line.strip() for line in out.splitlines() if line.strip()]
        if gpus:
            return f"{len(gpus)}× GPU {gpus[0]}"
    return f"CPU ({os.cpu_count()} cores)"
