"""Fine-tuning with TRL's trainers (+ PEFT LoRA): SFTTrainer for supervised rows, DPOTrainer,
ORPOTrainer and KTOTrainer for judged answers, GRPOTrainer for graded samples (reinforcement)."""

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from workers.config import Stop, TrainConfig, TrainResult
from workers.device import DeviceInfo, device_detect
from workers.events import ArtifactSaved, Emit, LogLine, Metric, Progress
from workers.formats import CHAT, PREFERENCE, PROMPT_ONLY, TEXT, UNPAIRED, format_detect, jsonl_rows
from workers.loading import model_load, tokenizer_load
from workers.templates import chat_as_completion, chat_tokens
from workers.tracking import tracker_env, tracker_report_to


def run_training(
    config: TrainConfig, emit: Emit, should_stop: Callable[[], Stop | bool] = lambda: Stop.NO
) -> TrainResult:
    """Fine-tune ``config.model_path`` on ``config.train_file``; report through ``emit``.

    ``should_stop`` is asked after every optimizer step. ``Stop.DISCARD`` (or True) ends the
    run after that step and saves nothing; ``Stop.CHECKPOINT`` ends it after writing a
    checkpoint of that step (reported as ``ArtifactSaved``), from which ``resume_from``
    continues with the same optimizer, scheduler and data order.
    """
    with tracker_env(config.trackers):
        return _run(config, emit, should_stop)


def _run(config: TrainConfig, emit: Emit, should_stop: Callable[[], Stop | bool]) -> TrainResult:
    import trl  # noqa: F401  (imported once per process: not part of a run's setup time)

    if config.objective == "rlaif":  # sampling and judging first, then DPO on the pairs
        from workers.rlaif import run_rlaif

        return run_rlaif(config, emit, should_stop)
    begun = time.perf_counter()
    memory_base = _memory_watch()
    device = device_detect()
    emit(LogLine(f"Training on {device.describe()} with {config.adapter}"
                 + (", Liger's fused kernels" if fused_kernels(device) else "")
                 + (f", template {config.template}" if config.template else "")
                 + (f", streaming its {config.stream_rows:,} rows from the file" if streams(config) else "")))
    callback = _callback_make(emit, should_stop)
    trainer = trainer_build(config, device, callback)
    started = time.perf_counter()
    callback.mark = callback.started = started
    output = trainer.train(resume_from_checkpoint=config.resume_from)
    wall = time.perf_counter() - started
    return _result_finish(trainer, config, emit, callback, output, wall, setup=started - begun,
                          memory_base=memory_base)


def trainer_build(config: TrainConfig, device: DeviceInfo, callback):
    """The trainer with its rows tokenized (``trainer.train_dataset``: ``input_ids`` and ``labels``),
    the tokenizer carrying ``config.template``; what ``workers.templates.render`` shows, token for token."""
    tokenizer = tokenizer_load(config.model_path, template=config.template)
    if streams(config):
        train = _dataset_stream(config, tokenizer)
    else:
        train = _dataset_load(config.train_file, tokenizer, config.template)
    evaluation = _dataset_load(config.validation_file, tokenizer, config.template) if config.validation_file else None
    return _trainer_make(config, device, tokenizer, train, evaluation, callback)


def _trainer_make(config: TrainConfig, device: DeviceInfo, tokenizer, train, evaluation, callback):
    """The objective's TRL trainer (LoRA: where a reference model is needed, it is the base)."""
    common = {"model": _model_load(config, device), "train_dataset": train, "eval_dataset": evaluation,
              "processing_class": tokenizer, "peft_config": _lora_config(config), "callbacks": [callback]}
    args = _common_args(config, device, has_eval=bool(evaluation))
    sharded = _fsdp_on_cpu if config.sharding == "fsdp" and device.kind == "cpu" else (lambda cls: cls)
    if config.objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        return sharded(DPOTrainer)(args=DPOConfig(**args, beta=config.beta), **common)
    if config.objective == "orpo":
        from trl.experimental.orpo import ORPOConfig

        if streams(config):
            common["train_dataset"] = _orpo_streamable(train)
            # its batches keep the prompt text: accelerate's dispatching (its default for an IterableDataset)
            # finds the batch size in the first column and fails on strings; each rank reads its share instead
            args["accelerator_config"] = {"dispatch_batches": False}
        return sharded(_orpo_trainer_class())(args=ORPOConfig(**args, beta=config.odds_ratio_weight), **common)
    if config.objective == "kto":
        from trl import KTOConfig, KTOTrainer

        return sharded(KTOTrainer)(args=KTOConfig(**args, beta=config.beta, desirable_weight=config.desirable_weight,
                                                  undesirable_weight=config.undesirable_weight), **common)
    if config.objective == "reinforcement":
        return _grpo_trainer(config, args, common, sharded)
    from trl import SFTTrainer

    trainer = sharded(SFTTrainer)(args=_sft_args(config, device, has_eval=bool(evaluation)), **common)
    if config.padding_free:  # TRL leaves truncation to us there (max_length=None)
        trainer.train_dataset = _truncated(trainer.train_dataset, config.max_length)
        if trainer.eval_dataset is not None:
            trainer.eval_dataset = _truncated(trainer.eval_dataset, config.max_length)
    return trainer


def _fsdp_on_cpu(trainer_class):
    """``trainer_class`` sharding with FSDP on CPU processes (gloo) too.

    accelerate turns its FSDP plugin on only for GPU-like devices: with CPU ranks (MULTI_CPU) it
    drops the plugin and wraps the model in DDP (``AcceleratorState.__init__``, accelerate 1.15).
    FSDP2's ``fully_shard`` itself runs over gloo, so right after the Trainer makes its accelerator
    (before any model, optimizer or reference model is prepared) the state is switched to FSDP with
    the plugin the Trainer built from ``fsdp_config``; everything after takes accelerate's FSDP path.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    class CpuSharded(trainer_class):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            if self.args.fsdp_plugin_args is not None and getattr(state, "fsdp_plugin", None) is None:
                state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
                state.distributed_type = DistributedType.FSDP
                # as accelerate does on GPUs: every later AcceleratorState() copies the type from here
                PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                self.is_fsdp_enabled = True

    CpuSharded.__name__ = CpuSharded.__qualname__ = trainer_class.__name__
    return CpuSharded


def _truncated(dataset, max_length: int):
    """Prepared rows (``input_ids``, ``labels``) cut at ``max_length`` and those left with no loss
    dropped, as SFTTrainer does when it is given ``max_length``."""
    dataset = dataset.map(lambda row: {"input_ids": row["input_ids"][:max_length],
                                       "labels": row["labels"][:max_length]})
    return dataset.filter(lambda row: any(label != -100 for label in row["labels"]))


def _orpo_trainer_class():
    """ORPOTrainer counting the tokens it reads. Its batches hold ``chosen_input_ids`` and
    ``rejected_input_ids``, not ``input_ids``, so the Trainer counts none (``num_input_tokens_seen``
    stays 0) and a run's pace could not be measured. Both sequences count (prompt and answer each,
    without padding), as ``workers.estimate.token_counts`` counts a pair."""
    from trl.experimental.orpo import ORPOTrainer

    class CountingORPOTrainer(ORPOTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            seen = sum(inputs[f"{side}_attention_mask"].sum() for side in ("chosen", "rejected"))
            self.state.num_input_tokens_seen += int(self.accelerator.gather(seen.reshape(1)).sum().item())
            return super().training_step(model, inputs, num_items_in_batch)

    return CountingORPOTrainer


def _orpo_streamable(dataset):
    """A streamed dataset ORPOTrainer can map. TRL 1.16's ORPOTrainer (``trl.experimental.orpo``) maps its
    rows with ``num_proc``, which ``IterableDataset.map`` does not take (a TypeError): that argument is
    dropped, the maps run lazily as the rows are read, and what they return can be mapped again."""
    from datasets import IterableDataset

    class Streamed(IterableDataset):
        def map(self, *args, num_proc=None, **kwargs):  # noqa: ARG002  (nothing to spread over processes)
            mapped = super().map(*args, **kwargs)
            mapped.__class__ = Streamed
            return mapped

    dataset.__class__ = Streamed
    return dataset


def _grpo_trainer(config: TrainConfig, args: dict, common: dict, sharded=lambda cls: cls):
    """GRPO: each step samples ``num_generations`` answers to each of ``batch_size`` prompts and rewards
    them with the grader (``workers.graders``); no KL term, so no reference model is kept."""
    from trl import GRPOConfig, GRPOTrainer

    from workers.graders import grader_reward

    args.pop("max_length")  # the prompt is kept whole; the answer is cut at max_completion_length
    answers = config.batch_size * config.num_generations
    args.update(per_device_train_batch_size=answers, per_device_eval_batch_size=answers)
    # a streamed run's rows come shuffled (``_dataset_stream``); TRL would shuffle the stream again
    # within a buffer running across passes, and a row could be read twice in one pass and not in another
    grpo = GRPOConfig(**args, num_generations=config.num_generations, beta=0.0, temperature=config.temperature,
                      max_completion_length=config.max_completion_length, shuffle_dataset=not streams(config))
    return sharded(GRPOTrainer)(reward_funcs=grader_reward(json.loads(config.grader), judge=_judge(config)), args=grpo,
                       **common)


def _judge(config: TrainConfig):
    """The judge of the grader's score_model graders (``workers.judge``), None when it names none."""
    if not config.judges:
        return None
    from workers.judge import judge_make

    return judge_make({name: tuple(files) for name, files in json.loads(config.judges).items()})


def _result_finish(trainer, config, emit, callback, output, wall, *, setup: float, memory_base: int) -> TrainResult:
    state = trainer.state
    tokens = int(state.num_input_tokens_seen or 0)
    adapter_dir = ""
    saving = time.perf_counter()
    if not callback.stopped:
        adapter_dir = str(Path(config.output_dir) / "adapter")
        if getattr(trainer, "is_fsdp_enabled", False):  # the whole model, gathered, not one file per rank
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model(adapter_dir)
        trainer.processing_class.save_pretrained(adapter_dir)
        emit(ArtifactSaved(kind="model" if config.adapter == "full" else "adapter", path=adapter_dir,
                           step=state.global_step, metrics={"train_loss": output.training_loss}))
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=state.global_step,
        total_steps=state.max_steps,
        trained_tokens=tokens,
        train_loss=float(output.training_loss),
        wall_seconds=wall,
        tokens_per_second=tokens / wall if wall else 0.0,
        stopped=callback.stopped,
        stop=callback.stop,
        peak_memory_bytes=_peak_memory(memory_base),
        # loading, tokenizing and the first step's warm-up: what comes before the steady pace
        setup_seconds=round(setup + max(0.0, callback.first_step_end - callback.started), 3),
        eval_seconds=round(callback.eval_seconds, 3),
        evals=callback.evals,
        save_seconds=round(callback.save_seconds, 3),
        saves=callback.saves,
        final_save_seconds=round(time.perf_counter() - saving, 3),
        step_tokens_per_second=(callback.steady_tokens / callback.steady_seconds if callback.steady_seconds
                                else tokens / wall if wall else 0.0),
        rank_parameters=callback.rank_parameters,
        step_seconds=round(callback.steady_seconds / callback.steady_steps if callback.steady_steps
                           else wall / state.global_step if state.global_step else 0.0, 4),
    )


def _memory_watch() -> int:
    """Start measuring this run's peak, not the process's: a worker runs job after job, and a peak kept
    from an earlier, larger job would be reported for this one. On a GPU the allocator's peak is reset; on
    CPU (Linux) the process's peak RSS is reset to its RSS now, which is returned: the run's figure is the
    growth above it (what ``workers.estimate.cpu_memory_need`` estimates). 0 where it cannot be reset."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return 0
    _memory_release()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to VmRSS (Documentation/filesystems/proc.rst)
        return _proc_status_bytes("VmRSS")
    except OSError:
        return 0


def _memory_release() -> None:
    """Give the memory an earlier run freed back to the system (glibc keeps it for reuse): a run that reused
    it would not grow the process, and would report a peak of nothing."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator keeps what it keeps
        pass


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # in kB


def _peak_memory(base: int) -> int:
    """The peak since ``_memory_watch``: on CPU the peak RSS above ``base`` (the process's whole peak RSS
    where it could not be reset)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    if base:
        return max(0, _proc_status_bytes("VmHWM") - base)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model_load(config: TrainConfig, device: DeviceInfo):
    """The base model to train, in the precision the device affords; quantized for QLoRA."""
    import torch

    quantization = config.quantization if config.adapter == "qlora" else None
    return model_load(config.model_path, dtype=torch.bfloat16 if device.bf16 else torch.float32,
                      quantization=quantization, for_training=True, checkpointing=config.gradient_checkpointing)


def _dataset_load(path: str, tokenizer, template: str = ""):
    from datasets import Dataset

    return Dataset.from_list([_row_clean(row, tokenizer, template) for row in jsonl_rows(path)])


# TRL's trainers that take an IterableDataset (ORPO's once ``_orpo_streamable`` adapts it); rlaif streams
# through its DPO run, on the pairs its sampling wrote (``workers.rlaif``)
STREAMED_OBJECTIVES = ("supervised", "dpo", "orpo", "kto", "reinforcement")


def streams(config: TrainConfig) -> bool:
    """Whether the run streams its training rows from the file (``config.stream_rows``): the trainer of
    every text objective does (TRL 1.16); rlaif reads its prompts one at a time and streams its pairs."""
    return config.stream_rows > 0 and config.objective in STREAMED_OBJECTIVES


STREAM_BUFFER_ROWS = 1000  # rows held for shuffling a streamed pass: its memory, and how far rows move


def _dataset_stream(config: TrainConfig, tokenizer):
    """The training rows as an ``IterableDataset`` read from ``config.train_file`` as the steps need
    them: ``n_epochs`` passes one after another, each shuffled within a buffer of
    ``STREAM_BUFFER_ROWS`` rows by ``seed`` and the pass. Only the buffer is in memory; TRL
    tokenizes each row when the batch is drawn.

    The Trainer sees one long epoch of ``max_steps`` (``_stream_args``): on resume it fast-forwards
    the stream past the batches of the steps already done (``ignore_data_skip=False``, its
    default), so a resumed run goes on at the exact row, with no state beyond the step count.
    """
    from datasets import IterableDataset

    def rows():
        for epoch in range(config.n_epochs):
            order = random.Random(f"{config.seed}:{epoch}")
            for row in _buffer_shuffled(jsonl_rows(config.train_file), order):
                yield _row_clean(row, tokenizer, config.template)

    return IterableDataset.from_generator(rows)


def _buffer_shuffled(rows: Iterator[dict], order: random.Random) -> Iterator[dict]:
    """``rows`` shuffled within a buffer: each row out is drawn at random from the next rows held."""
    buffer: list[dict] = []
    for row in rows:
        if len(buffer) < STREAM_BUFFER_ROWS:
            buffer.append(row)
            continue
        index = order.randrange(len(buffer))
        yield buffer[index]
        buffer[index] = row
    order.shuffle(buffer)
    yield from buffer


def _stream_args(config: TrainConfig, args: dict) -> dict:
    """Trainer settings of a streamed run, whose rows the Trainer cannot count: the optimizer steps
    of ``n_epochs`` passes over ``stream_rows`` rows (batches run on across a pass's end, so there
    may be a step fewer than in memory), and a checkpoint or validation pass each pass's worth of
    steps where the options say "each epoch" (the Trainer's one epoch is the whole run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rows_per_step = config.batch_size * config.gradient_accumulation_steps * world
    steps = math.ceil(config.n_epochs * config.stream_rows / rows_per_step)
    per_pass = max(1, steps // config.n_epochs)
    args.update(max_steps=steps, save_strategy="steps", save_steps=config.save_steps or per_pass)
    if args["eval_strategy"] != "no":
        args.update(eval_strategy="steps", eval_steps=config.eval_steps or per_pass)
    return args


def _row_clean(row: dict, tokenizer, template: str = "") -> dict:
    """Keep only the columns the trainer reads, so rows with extra keys line up. Chat rows arrive
    tokenized (ids and the assistant's mask, as ``render`` shows them): turns with tool calls and a
    row's tools would not survive a columnar dataset (each call's arguments are a different object)."""
    fmt = format_detect(row)
    if fmt == PREFERENCE:  # already normalised to prompt/chosen/rejected
        return {key: row[key] for key in ("prompt", "chosen", "rejected") if key in row}
    if fmt == UNPAIRED:
        return {key: row[key] for key in ("prompt", "completion", "label") if key in row}
    if fmt == PROMPT_ONLY:  # the grader reads the whole row as {{item.*}}: one JSON column whatever its fields
        return {"prompt": [{"role": m["role"], "content": m.get("content") or ""} for m in row["messages"]],
                "item": json.dumps(row)}
    if fmt == CHAT and template == "completion":  # no template: prompt/completion, as render does
        return chat_as_completion(row["messages"])
    if fmt == CHAT:
        ids, mask = chat_tokens(tokenizer, row)
        return {"input_ids": ids, "assistant_masks": mask}
    if fmt == TEXT:  # plain text: continued pre-training on every token
        return {"text": row["text"]}
    return {"prompt": row["prompt"], "completion": row["completion"]}


def _common_args(config: TrainConfig, device: DeviceInfo, *, has_eval: bool) -> dict:
    """Trainer settings shared by every objective (a streamed run's step count: ``_stream_args``)."""
    args = {
        "output_dir": str(Path(config.output_dir) / "checkpoints"),
        "num_train_epochs": config.n_epochs,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps else "epoch",
        "save_steps": config.save_steps or 500,
        "eval_strategy": ("steps" if config.eval_steps else "epoch") if has_eval else "no",
        "eval_steps": config.eval_steps or None,
        **device_settings(device),
        # explicit for every objective: TRL's configs would otherwise turn it on (SFTConfig defaults it on)
        "activation_checkpointing": config.gradient_checkpointing,
        "include_num_input_tokens_seen": "non_padding",
        "dataloader_pin_memory": device.kind == "cuda",
        "report_to": tracker_report_to(config.trackers),
        "run_name": config.run_name or None,
        "disable_tqdm": True,
        "save_only_model": False,
        **sharding_settings(config),
    }
    return _stream_args(config, args) if streams(config) else args


def sharding_settings(config: TrainConfig) -> dict:
    """Trainer settings of ``config.sharding`` (the ranks come from torchrun, ``workers.distributed``).

    fsdp: FSDP2 (torch's ``fully_shard``) through accelerate, each decoder layer a unit; it runs on
    CPU over gloo as on GPUs. Checkpoints are sharded (each rank writes its part of the weights and
    optimizer state; ``resume_from`` reads them back on as many ranks); the final save gathers the
    whole model (``_result_finish``). zero2/zero3: DeepSpeed's ZeRO through the Trainer, its batch
    sizes and precision taken from the Trainer's ("auto"); on CPU ranks DeepSpeed's CPU accelerator
    talks over gloo. The option's check refuses them where deepspeed is not installed.
    """
    if config.sharding == "fsdp":
        return {"fsdp": True, "fsdp_config": {"version": 2, "reshard_after_forward": True,
                                              "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                              "state_dict_type": "SHARDED_STATE_DICT"}}
    if config.sharding in ("zero2", "zero3"):
        stage = int(config.sharding[-1])
        zero = {"stage": stage, **({"stage3_gather_16bit_weights_on_model_save": True} if stage == 3 else {})}
        return {"deepspeed": {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
                              "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
                              "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}}
    return {}


def _sft_args(config: TrainConfig, device: DeviceInfo, *, has_eval: bool):
    from trl import SFTConfig

    # chat rows come tokenized with their assistant mask, which TRL turns into labels itself.
    # padding_free: a batch's rows become one sequence, each row's positions restarting at 0, from which
    # transformers masks attention per row (flash attention's varlen kernels on GPU, a block mask otherwise).
    # TRL refuses max_length there without packing: the rows are truncated once the trainer has them.
    args = _common_args(config, device, has_eval=has_eval)
    if config.padding_free:
        args.update(padding_free=True, max_length=None)
    return SFTConfig(**args)


def device_settings(device: DeviceInfo) -> dict:
    """Trainer settings a device affords."""
    return {
        # bf16 only where the GPU has it: emulated on CPU it is ~15x slower.
        "bf16": device.bf16,
        "fp16": device.kind == "cuda" and not device.bf16,
        "use_cpu": device.kind == "cpu",
        # Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, cross-entropy without the full logits):
        # faster and smaller on CUDA, for the families it patches; nothing on CPU
        "use_liger_kernel": fused_kernels(device),
    }


def fused_kernels(device: DeviceInfo) -> bool:
    """Whether a run on ``device`` uses Liger's fused kernels: on CUDA where liger-kernel is installed."""
    import importlib.util

    return device.kind == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def _lora_config(config: TrainConfig):
    if config.adapter == "full":
        return None
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets[0] if targets == ("all-linear",) else list(targets),
        task_type="CAUSAL_LM",
    )


def _callback_make(emit: Emit, should_stop: Callable[[], bool]):
    from transformers import TrainerCallback

    class Reporter(TrainerCallback):
        """Turns trainer hooks into engine events and honours ``should_stop``. Also times the
        validation passes and checkpoint writes inside the loop, for the next run's estimate."""

        stopped = False
        stop = Stop.NO
        mark = started = 0.0  # when the last step, validation pass or save ended; when the loop began
        eval_seconds = save_seconds = 0.0
        evals = saves = 0
        rank_parameters: tuple[int, ...] = ()  # parameter elements each rank holds (sharded: its part)
        # the steps after this run's first (which warms up): their time and tokens give the pace
        first_step_end = steady_seconds = 0.0
        first_tokens = steady_tokens = steady_steps = 0

        def _since_mark(self) -> float:
            now = time.perf_counter()
            spent, self.mark = now - self.mark, now
            return spent

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.rank_parameters = _parameters_per_rank(model)
            if len(self.rank_parameters) > 1:
                held = " / ".join(f"{count:,}" for count in self.rank_parameters)
                emit(LogLine(f"Parameters held per rank: {held}"))

        def on_step_end(self, args, state, control, **kwargs):
            spent, tokens = self._since_mark(), int(state.num_input_tokens_seen or 0)
            if not self.first_step_end:
                self.first_step_end, self.first_tokens = self.mark, tokens
            else:
                self.steady_seconds += spent
                self.steady_steps += 1
                self.steady_tokens = tokens - self.first_tokens
            emit(Progress(state.global_step, state.max_steps, tokens))
            asked = should_stop()
            if asked:
                self.stopped = True
                self.stop = Stop.CHECKPOINT if asked == Stop.CHECKPOINT else Stop.DISCARD
                control.should_training_stop = True
                control.should_save = self.stop == Stop.CHECKPOINT
                control.should_evaluate = False

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.stopped:  # a discarded run leaves nothing behind; a paused one its checkpoint
                control.should_save = self.stop == Stop.CHECKPOINT
                control.should_evaluate = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = {k: v for k, v in (logs or {}).items() if isinstance(v, int | float)}
            values["tokens"] = int(state.num_input_tokens_seen or 0)
            emit(Metric(state.global_step, state.max_steps, values))

        def on_evaluate(self, args, state, control, **kwargs):
            self.eval_seconds += self._since_mark()
            self.evals += 1

        def on_save(self, args, state, control, model=None, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if args.fsdp and _is_adapter(model):
                _sharded_adapter_write(model, path)
            _ranks_wait()  # every rank's part is written before the checkpoint is announced (and stored)
            self.save_seconds += self._since_mark()
            self.saves += 1
            metrics = _last_metrics(state.log_history)
            emit(ArtifactSaved(kind="checkpoint", path=str(path), step=state.global_step, metrics=metrics))

    return Reporter()


def _parameters_per_rank(model) -> tuple[int, ...]:
    """The parameter elements each rank holds in memory: a sharded parameter counts only its local part
    (FSDP's DTensor, DeepSpeed ZeRO-3's ``ds_tensor``). One entry per rank, gathered from all (a
    collective: every rank calls it)."""
    import torch.distributed as dist

    held = sum(_local_numel(p) for p in model.parameters()) if model else 0
    if not (dist.is_available() and dist.is_initialized()):
        return (held,)
    counts: list = [None] * dist.get_world_size()
    dist.all_gather_object(counts, held)
    return tuple(counts)


def _local_numel(parameter) -> int:
    from torch.distributed.tensor import DTensor

    if isinstance(parameter, DTensor):
        return parameter.to_local().numel()
    partition = getattr(parameter, "ds_tensor", None)  # ZeRO-3 keeps an empty placeholder in the parameter
    return partition.numel() if partition is not None else parameter.numel()


def _is_adapter(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _sharded_adapter_write(model, path: Path) -> None:
    """The adapter of an FSDP checkpoint as PEFT saves it, so the checkpoint loads as a model
    (inference, evaluation): the FSDP checkpoint holds the adapter's weights in one part per rank.
    Only the trainable (adapter) weights are gathered, to rank 0; every rank calls it (a collective)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    if dist.get_rank() == 0:
        model.save_pretrained(str(path), state_dict=weights)


def _ranks_wait() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _last_metrics(history: list[dict]) -> dict:
    for entry in reversed(history):
        if "loss" in entry:
            return {"train_loss": entry["loss"]}
    return {}
