"""The CPU memory estimate's formula, pinned against a hand computation (its constants come from
benchmarks/memory_estimate.py; a change to them or to the formula must change these figures)."""

from workers.estimate import Shape, memory_need

SHAPE = Shape(hidden_size=100, layers=2, intermediate_size=300, vocab_size=1000)


def _cpu(**options) -> int:
    values = dict(parameters=1_000_000, shape=SHAPE, adapter="full", quantization="nf4", batch_size=2,
                  max_length=10, checkpointing=False, half_precision=False, device="cpu")
    return memory_need(**{**values, **options})


def test_cpu_estimate_of_full_fine_tuning_counts_adamw_states_and_each_layer_per_token():
    states = 1_000_000 * 4 * 4  # fp32 weights, gradients, two moments
    per_token = 2 * 10.5 * 300 + 7.5 * 1000 + 14_500  # layers x 10.5 x intermediate, the logits, a fixed part
    assert _cpu() == states + 2 * 10 * per_token * 4 == 18_264_000
    assert _cpu(shards=2) == states / 2 + 2 * 10 * per_token * 4 == 10_264_000


def test_cpu_estimate_of_lora_with_checkpointing_keeps_each_layer_input_and_one_layer():
    adapters = 8 * 2 * (11 * 100 + 3 * 300)  # rank x layers x (11h + 3i) = 32,000
    states = (1_000_000 + adapters * 4) * 4  # the frozen base, the adapters with gradients and moments
    one_layer = 10.5 * 300 + 18 * 100
    per_token = 16 * 2 * 100 + one_layer + 7.5 * 1000 + 14_500
    assert _cpu(adapter="lora", lora_r=8, checkpointing=True) == states + 2 * 10 * per_token * 4 == 6_924_000
    # QLoRA does not quantize on CPU: it needs what LoRA does
    assert _cpu(adapter="qlora", lora_r=8, checkpointing=True) == 6_924_000

