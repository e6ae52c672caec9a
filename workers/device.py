"""Which device a run uses and which precision it can afford there."""

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
