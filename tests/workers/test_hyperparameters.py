"""The one declaration of every training option, and what is generated from it."""

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from workers.config import TrainConfig
from workers.hyperparameters import (
    BY_NAME,
    OPTIONS,
    Context,
    OptionError,
    arguments_add,
    arguments_read,
    engine_defaults,
    hyperparameters_resolve,
    hyperparameters_schema,
    options_markdown,
)

ROOT = Path(__file__).resolve().parent.parent.parent
SMALL = Context(parameters=3_000_000, context_length=2048, rows=48)


def test_train_config_has_a_field_for_every_engine_option_with_the_spec_default():
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for option in OPTIONS:
        assert (option.name in fields) == option.engine, option.name
    assert {name: fields[name] for name in engine_defaults()} == {
        name: tuple(value) if isinstance(value, list) else value for name, value in engine_defaults().items()}


def test_train_config_survives_a_json_round_trip_unchanged():
    config = TrainConfig(model_path="m", train_file="t", output_dir="o", lora_target_modules=["q_proj", "v_proj"])
    assert TrainConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


def test_train_config_refuses_what_the_api_refuses():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(model_path="m", train_file="t", output_dir="o", learning_rate=float("nan"))
    with pytest.raises(ValueError, match="adapter"):
        TrainConfig(model_path="m", train_file="t", output_dir="o", adapter="dora")


def test_auto_resolves_by_adapter_and_model_size():
    lora = hyperparameters_resolve({}, SMALL)
    assert lora["learning_rate"] == 1e-3 and lora["lora_alpha"] == 32 and lora["batch_size"] == 8
    full = hyperparameters_resolve({"adapter": "full"}, Context(parameters=7_000_000_000, rows=8))
    assert full["learning_rate"] == 2e-5 and full["batch_size"] == 2
    assert "lora_r" not in full and "quantization" not in full  # options that do not apply are left out
    assert set(full["auto_resolved"]) == set(full) - {"adapter", "auto_resolved"}


def test_learning_rate_multiplier_scales_the_automatic_rate_and_is_never_ignored():
    assert hyperparameters_resolve({"learning_rate_multiplier": 2}, SMALL)["learning_rate"] == 2e-3
    given = hyperparameters_resolve({"learning_rate": 3e-3}, SMALL)
    assert given["learning_rate_multiplier"] == 3.0  # what the given rate is against the automatic one
    with pytest.raises(OptionError, match="give one") as refused:
        hyperparameters_resolve({"learning_rate": 3e-3, "learning_rate_multiplier": 2}, SMALL)
    assert refused.value.name == "learning_rate"


@pytest.mark.parametrize(("given", "objective", "name"), [
    ({"beta": 0.2}, "supervised", "beta"),
    ({"quantization": "int8"}, "supervised", "quantization"),
    ({"adapter": "full", "lora_r": 8}, "supervised", "lora_r"),
    ({"template": "chatml"}, "dpo", "template"),
    ({"beta": 0.2}, "orpo", "beta"),
    ({"odds_ratio_weight": 0.2}, "dpo", "odds_ratio_weight"),
    ({"desirable_weight": 2}, "dpo", "desirable_weight"),
    ({"num_generations": 4}, "supervised", "num_generations"),
    ({"max_length": 512}, "reinforcement", "max_length"),
    ({"padding_free": True}, "dpo", "padding_free"),
    ({"padding_free": False}, "reinforcement", "padding_free"),
])
def test_an_option_that_does_not_apply_is_refused_by_name(given, objective, name):
    with pytest.raises(OptionError, match="applies only with") as refused:
        hyperparameters_resolve(given, Context(objective=objective))
    assert refused.value.name == name


@pytest.mark.parametrize(("given", "name", "words"), [
    ({"n_epochs": 0}, "n_epochs", "from 1 to 100"),
    ({"n_epochs": 2.5}, "n_epochs", "integer"),
    ({"learning_rate": float("inf")}, "learning_rate", "number"),
    ({"lora_target_modules": ["q_proj\x00"]}, "lora_target_modules", "printable"),
    ({"max_length": 4096}, "max_length", "context of 2048"),
    ({"eval_steps": 10}, "eval_steps", "validation_file"),
    ({"tempo": 1}, "tempo", "not a hyperparameter"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing", "true, false"),
    ({"padding_free": 1}, "padding_free", "true, false"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps", "from 1 to 1024"),
])
def test_bad_values_name_the_option_and_what_is_expected(given, name, words):
    with pytest.raises(OptionError, match=words) as refused:
        hyperparameters_resolve(given, Context(context_length=2048, has_validation=False))
    assert refused.value.name == name


def test_kto_batches_hold_two_rows_at_least():
    kto = Context(objective="kto", rows=4)
    assert hyperparameters_resolve({}, kto)["batch_size"] == 2 and hyperparameters_resolve({}, SMALL)["batch_size"] == 8
    with pytest.raises(OptionError, match="at least 2 for kto") as refused:
        hyperparameters_resolve({"batch_size": 1}, kto)
    assert refused.value.name == "batch_size"
    assert hyperparameters_resolve({"batch_size": 1}, Context(objective="dpo"))["batch_size"] == 1


def test_memory_savers_resolve_from_the_estimate_and_the_batch():
    on_cpu = hyperparameters_resolve({}, SMALL)  # the estimate knows no device it could overflow
    assert (on_cpu["gradient_checkpointing"], on_cpu["padding_free"], on_cpu["gradient_accumulation_steps"]) \
        == (False, True, 1)
    gib = 2**30
    too_big = dataclasses.replace(SMALL, peak_memory_bytes=20 * gib, device_memory_bytes=16 * gib)
    assert hyperparameters_resolve({}, too_big)["gradient_checkpointing"] is True
    fits = dataclasses.replace(too_big, device_memory_bytes=80 * gib)
    assert hyperparameters_resolve({}, fits)["gradient_checkpointing"] is False
    assert hyperparameters_resolve({"gradient_checkpointing": False}, too_big)["gradient_checkpointing"] is False
    assert hyperparameters_resolve({"batch_size": 1}, SMALL)["padding_free"] is False  # one row: nothing to save
    dpo = hyperparameters_resolve({"gradient_accumulation_steps": 4}, Context(objective="dpo"))
    assert "padding_free" not in dpo and dpo["gradient_accumulation_steps"] == 4
    assert "gradient_checkpointing" in dpo
    schema = hyperparameters_schema("supervised")["properties"]["padding_free"]
    assert schema["oneOf"][0] == {"type": "boolean"}
    assert BY_NAME["padding_free"].display(True) == "on" and BY_NAME["gradient_checkpointing"].display(False) == "off"


def test_every_option_has_a_cli_flag_parsed_like_the_api():
    parser = argparse.ArgumentParser()
    arguments_add(parser)
    values = vars(parser.parse_args(["--n-epochs", "4", "--adapter", "qlora", "--lora-target-modules", "q,v",
                                     "--learning-rate", "auto", "--padding-free", "false",
                                     "--gradient-checkpointing", "true"]))
    assert {option.name for option in OPTIONS} <= set(values)
    assert arguments_read(values) == {"n_epochs": 4, "adapter": "qlora", "lora_target_modules": ["q", "v"],
                                      "learning_rate": "auto", "padding_free": False, "gradient_checkpointing": True}


def test_the_openapi_schema_lists_the_options_of_each_objective():
    supervised, dpo = hyperparameters_schema("supervised")["properties"], hyperparameters_schema("dpo")["properties"]
    assert "template" in supervised and "beta" not in supervised
    assert "beta" in dpo and "template" not in dpo
    assert supervised["n_epochs"]["oneOf"][0] == {"type": "integer", "minimum": 1, "maximum": 100}
    reinforcement = hyperparameters_schema("reinforcement")["properties"]
    assert {"num_generations", "max_completion_length", "temperature"} <= set(reinforcement)
    assert "max_length" not in reinforcement and "beta" not in reinforcement
    assert {"beta", "desirable_weight"} <= set(hyperparameters_schema("kto")["properties"])


def test_the_readme_table_is_the_generated_one():
    """`make docs` writes it; an option added to the spec must reach the README."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- hyperparameters:start -->\n(.*?)<!-- hyperparameters:end -->", readme, re.S)
    assert block, "README.md has no generated hyperparameters table"
    assert block.group(1) == options_markdown()


def test_an_option_name_lives_only_in_the_spec_the_code_that_uses_it_and_generated_docs():
    """No hand-written list of options elsewhere: ``lora_dropout`` is named by the spec, the trainer
    that applies it, and tests; not by the API, the wizard, the CLI or the services."""
    named = sorted(str(path.relative_to(ROOT)) for package in ("workers", "jobs_app", "datasets_app", "models_app",
                                                              "finetune_site", "templates")
                   for path in (ROOT / package).rglob("*") if path.suffix in (".py", ".html")
                   and "migrations" not in path.parts and "lora_dropout" in path.read_text())
    assert named == ["workers/hyperparameters.py", "workers/training.py"]
    assert BY_NAME["lora_dropout"].help


def test_sharding_auto_shards_only_a_model_that_does_not_fit_one_device():
    over = Context(peak_memory_bytes=90 << 30, device_memory_bytes=80 << 30)
    assert hyperparameters_resolve({"devices": 2}, over)["sharding"] == "fsdp"
    assert hyperparameters_resolve({"devices": 1}, over)["sharding"] == "none"  # nothing to shard across
    assert hyperparameters_resolve({"devices": 2}, Context(peak_memory_bytes=9 << 30,
                                                           device_memory_bytes=80 << 30))["sharding"] == "none"
    assert hyperparameters_resolve({"devices": 2}, SMALL)["sharding"] == "none"  # no estimate: nothing forces it
    assert hyperparameters_resolve({"devices": 2, "sharding": "fsdp"}, SMALL)["sharding"] == "fsdp"


def test_sharding_on_one_device_is_refused_by_the_api_and_the_engine():
    with pytest.raises(OptionError, match=r"set devices \(or nodes\) above 1") as caught:
        hyperparameters_resolve({"sharding": "fsdp"}, SMALL)
    assert caught.value.name == "sharding"
    with pytest.raises(ValueError, match=r"set devices \(or nodes\) above 1"):
        TrainConfig(model_path="m", train_file="t", output_dir="o", sharding="fsdp")
    assert TrainConfig(model_path="m", train_file="t", output_dir="o", sharding="fsdp", devices=2).sharding == "fsdp"


def test_sharding_over_nodes_of_one_device_each_is_allowed():
    """Two nodes of one device are a world of two ranks: the weights split across the machines."""
    assert hyperparameters_resolve({"nodes": 2, "sharding": "fsdp"}, SMALL)["sharding"] == "fsdp"
    assert hyperparameters_resolve({"nodes": 2, "devices": 2, "sharding": "fsdp"}, SMALL)["sharding"] == "fsdp"
    over = Context(peak_memory_bytes=90 << 30, device_memory_bytes=80 << 30)
    assert hyperparameters_resolve({"nodes": 2}, over)["sharding"] == "fsdp"
    assert TrainConfig(model_path="m", train_file="t", output_dir="o", sharding="fsdp", nodes=2).nodes == 2


def test_sharding_leaves_qlora_alone():
    with pytest.raises(OptionError, match="adapter lora or full"):
        hyperparameters_resolve({"adapter": "qlora", "devices": 2, "sharding": "fsdp"}, SMALL)
    assert "sharding" not in hyperparameters_resolve({"adapter": "qlora", "devices": 2}, SMALL)
