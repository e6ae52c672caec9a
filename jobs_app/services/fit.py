"""Whether a job fits the GPUs it would run on, decided before anything is queued."""

from finetune_site.errors import InvalidRequest
from jobs_app.selectors import workers_alive
from models_app.base_models.models import BaseModel
from workers.estimate import GIB, Shape, memory_need
from workers.hyperparameters import ranks

FIT_SHARE = 0.95  # of a GPU's memory a job may plan to use
LIGHTER_ADAPTERS = {"full": ("lora", "qlora"), "lora": ("qlora",)}  # what a job could switch to, lighter first


def gpu_memory_largest() -> tuple[int, bool, int] | None:
    """(the largest GPU of the live registered workers in bytes, whether it has bf16, how many GPUs that
    worker has), or None without GPU workers (one unseen lately, ``workers_alive``, is not planned for)."""
    gpus = [d for d in workers_alive().values_list("devices", flat=True) if d.get("kind") == "cuda"]
    if not gpus:
        return None
    largest = max(gpus, key=lambda d: d.get("memory_bytes") or 0)
    return largest.get("memory_bytes") or 0, bool(largest.get("bf16", True)), largest.get("count") or 1


def job_memory_need(hp: dict, *, base_model: BaseModel, half_precision: bool = True,
                    device: str = "cuda") -> int | None:
    """Bytes one GPU needs to train with the options ``hp`` (``workers.estimate.memory_need``), or with
    ``device="cpu"`` what the run adds to a CPU worker's process; None when the base model's size or shape
    is unknown."""
    if not base_model.parameters or not base_model.shape:
        return None
    return memory_need(parameters=base_model.parameters, shape=Shape(**base_model.shape), adapter=hp["adapter"],
                       quantization=hp.get("quantization") or "nf4", batch_size=hp["batch_size"],
                       max_length=hp.get("max_length") or base_model.context_length,  # reinforcement has none
                       checkpointing=bool(hp.get("gradient_checkpointing")), half_precision=half_precision,
                       lora_r=hp.get("lora_r") or 16, shards=_shards(hp), device=device)


def _shards(hp: dict) -> int:
    """Ranks the weights, gradients and optimizer are split over (on all the job's nodes): FSDP and ZeRO-3
    split all three."""
    return ranks(hp) if hp.get("sharding") in ("fsdp", "zero3") else 1


def job_fit_check(hp: dict, *, base_model: BaseModel, param: str) -> dict:
    """``hp``, or a 400 when the job would not fit the largest GPU a worker has (with the estimate and
    the changes that would make it fit). Savers left to "auto" are turned on here when they are what
    makes the job fit: gradient checkpointing, then FSDP over the job's devices. Nothing is refused
    where no GPU worker is registered (CPU memory is not a hard limit) or the model's shape is unknown."""
    gpu = gpu_memory_largest()
    need = job_memory_need(hp, base_model=base_model, half_precision=gpu[1]) if gpu else None
    if need is None or not gpu[0] or need <= gpu[0] * FIT_SHARE:
        return hp
    for saved in _auto_savers(hp):
        if job_memory_need(saved, base_model=base_model, half_precision=gpu[1]) <= gpu[0] * FIT_SHARE:
            return saved
    limit = gpu[0] * FIT_SHARE
    fixes = []
    for group in (_single_changes(hp, gpus=gpu[2]), _combined_changes(hp)):
        for candidates in group:  # the first change of each kind that fits
            sizes = ((change, job_memory_need(changed, base_model=base_model, half_precision=gpu[1]))
                     for change, changed in candidates)
            fitting = next(((change, size) for change, size in sizes if size <= limit), None)
            if fitting:
                fixes.append(f"{fitting[0]} (about {_gib(fitting[1])})")
        if fixes:
            break
    advice = ("; it would fit with " + ", or ".join(fixes)) if fixes else \
        "; no change of its options fits it: a smaller base model, or a larger GPU"
    raise InvalidRequest(f"this job needs about {_gib(need)} of GPU memory and the largest GPU of the workers has "
                         f"{_gib(gpu[0])}{advice}", param=param, code="does_not_fit")


def _auto_savers(hp: dict):
    """``hp`` with the memory savers left to "auto" turned on, one more at a time: gradient checkpointing,
    then FSDP over the job's devices (on all its nodes)."""
    auto = set(hp.get("auto_resolved", ()))
    saved = dict(hp)
    if "gradient_checkpointing" in auto and "gradient_checkpointing" in hp:
        saved["gradient_checkpointing"] = True
        yield saved
    if "sharding" in auto and ranks(hp) > 1 and hp.get("sharding") == "none":
        yield {**saved, "sharding": "fsdp"}


def _single_changes(hp: dict, *, gpus: int) -> list[list[tuple[str, dict]]]:
    """Kinds of change, each a list of candidates from the mildest: checkpointing, a smaller batch
    (accumulated to the same effective batch), sharding over the worker's GPUs, a lighter adapter."""
    kinds = []
    if not hp.get("gradient_checkpointing"):
        kinds.append([('"gradient_checkpointing": true', {**hp, "gradient_checkpointing": True})])
    batches, batch = [], hp["batch_size"]
    while batch > 1:
        batch //= 2
        accumulate = hp.get("gradient_accumulation_steps", 1) * hp["batch_size"] // batch
        batches.append((f'"batch_size": {batch} with "gradient_accumulation_steps": {accumulate}',
                        {**hp, "batch_size": batch}))
    kinds.append(batches)
    if gpus > 1 and hp["adapter"] != "qlora" and _shards(hp) == 1:
        kinds.append([(f'"devices": {gpus} with "sharding": "fsdp"', {**hp, "devices": gpus, "sharding": "fsdp"})])
    adapters = LIGHTER_ADAPTERS.get(hp["adapter"], ())
    kinds.append([(f'"adapter": "{name}"', {**hp, "adapter": name, "quantization": hp.get("quantization") or "nf4"})
                  for name in adapters])
    return kinds


def _combined_changes(hp: dict) -> list[list[tuple[str, dict]]]:
    """QLoRA with checkpointing, then with a batch of one: where no single change is enough."""
    light = {**hp, "adapter": "qlora", "quantization": hp.get("quantization") or "nf4", "gradient_checkpointing": True}
    return [[('"adapter": "qlora" with "gradient_checkpointing": true', light),
             ('"adapter": "qlora", "gradient_checkpointing": true and "batch_size": 1', {**light, "batch_size": 1})]]


def _gib(size: int) -> str:
    return f"{size / GIB:,.1f} GiB"
