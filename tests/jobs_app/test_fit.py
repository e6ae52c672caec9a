"""A job that would not fit the workers' GPUs is refused before anything is queued, with the changes
that would make it fit; gradient checkpointing left to "auto" turns on when it is what makes it fit."""

from datetime import timedelta

import pytest
from django.utils import timezone

from finetune_site.errors import InvalidRequest
from jobs_app.models import FineTuneJob, Worker
from jobs_app.services import job_create
from models_app.base_models.models import BaseModel
from tests.factories import make_dataset, make_user
from workers.estimate import GIB, Shape, memory_need

pytestmark = pytest.mark.django_db

LLAMA_7B = {"parameters": 6_738_415_616, "shape": {"hidden_size": 4096, "layers": 32, "intermediate_size": 11008,
                                                   "vocab_size": 32000}}
LONG = {"batch_size": 4, "max_length": 2048}


@pytest.fixture
def seven_b():
    return BaseModel.objects.create(name="llama-7b", source="/models/llama-7b", context_length=4096, **LLAMA_7B)


def _gpu(gib: int) -> None:
    Worker.objects.create(name=f"gpu-{gib}", devices={"kind": "cuda", "count": 1, "memory_bytes": gib * GIB,
                                                      "bf16": True})


def _create(user, **hp):
    return job_create(owner=user, training_file=make_dataset(user).id, model="llama-7b", hyperparameters=hp)


def test_the_fit_check_plans_only_for_gpus_of_workers_seen_lately(seven_b):
    """An 80 GiB worker killed without unregistering is not there to run the job: the 24 GiB one decides."""
    _gpu(80)
    _gpu(24)
    user = make_user()
    lora = {"adapter": "lora", "gradient_checkpointing": False, **LONG}  # ~64 GiB
    assert _create(user, **lora)  # fits the 80 GiB GPU while its worker is alive
    Worker.objects.filter(name="gpu-80").update(last_seen=timezone.now() - timedelta(minutes=10))
    with pytest.raises(InvalidRequest) as refused:
        _create(user, **lora)
    assert refused.value.code == "does_not_fit" and "the largest GPU of the workers has 24.0 GiB" in str(refused.value)


def test_a_full_fine_tune_too_big_for_the_gpu_is_refused_with_what_would_fit(seven_b):
    _gpu(24)
    user = make_user()
    with pytest.raises(InvalidRequest) as refused:
        _create(user, adapter="full", **LONG)
    error = refused.value
    assert error.code == "does_not_fit" and error.param == "method.supervised.hyperparameters"
    assert "needs about 1" in error.message and "the largest GPU of the workers has 24.0 GiB" in error.message
    assert '"adapter": "qlora"' in error.message and "full" not in error.message.split("fit with")[1]
    assert not FineTuneJob.objects.exists()  # nothing stored


def test_auto_checkpointing_turns_on_when_it_makes_a_lora_job_fit(seven_b):
    _gpu(24)
    user = make_user()
    job = _create(user, adapter="lora", **LONG)  # ~64 GiB without checkpointing, ~22 GiB with it
    assert job.hyperparameters["gradient_checkpointing"] is True
    with pytest.raises(InvalidRequest, match='"gradient_checkpointing": true') as refused:
        _create(user, adapter="lora", gradient_checkpointing=False, **LONG)  # said, so kept: refused instead
    assert "it would fit with" in refused.value.message


def test_without_gpu_workers_nothing_is_refused(seven_b):
    job = _create(make_user(), adapter="full", **LONG)  # CPU memory is not a hard limit
    assert job.hyperparameters["adapter"] == "full"


def test_memory_need_follows_what_saves_memory():
    shape = Shape(**LLAMA_7B["shape"])

    def need(**changes):
        values = dict(parameters=LLAMA_7B["parameters"], shape=shape, adapter="lora", quantization="nf4",
                      batch_size=4, max_length=2048, checkpointing=False, half_precision=True)
        return memory_need(**{**values, **changes}) / GIB

    assert need(adapter="qlora") < need() < need(adapter="full")
    assert need(checkpointing=True) < need() / 2
    assert need(batch_size=1) < need()
    assert need(adapter="full", checkpointing=True, shards=8) < need(adapter="full", checkpointing=True) / 2
    assert 50 < need(adapter="full", checkpointing=True) < 80  # 7B in bf16 with AdamW: ~8 bytes a weight
    assert 8 < need(adapter="qlora", checkpointing=True) < 16


def test_a_full_fine_tune_that_fits_when_sharded_says_so_and_fits_once_sharded(seven_b):
    Worker.objects.create(name="gpu-8x40", devices={"kind": "cuda", "count": 8, "memory_bytes": 40 * GIB,
                                                    "bf16": True})
    user = make_user()
    with pytest.raises(InvalidRequest, match='"devices": 8 with "sharding": "fsdp"'):
        _create(user, adapter="full", gradient_checkpointing=True, **LONG)
    job = _create(user, adapter="full", gradient_checkpointing=True, devices=8, sharding="fsdp", **LONG)
    assert (job.hyperparameters["devices"], job.hyperparameters["sharding"]) == (8, "fsdp")


def test_the_wizard_review_shows_the_refusal_before_the_job_is_submitted(seven_b, client):
    from django.urls import reverse

    _gpu(24)
    user = make_user()
    client.force_login(user)
    client.post(reverse("jobs:wizard_dataset"), {"training_file": make_dataset(user).id})
    client.post(reverse("jobs:wizard_model"), {"model": "llama-7b", "objective": "supervised", "adapter": "full",
                                               "batch_size": "4", "max_length": "2048"})
    review = client.get(reverse("jobs:wizard_review")).content.decode()
    assert 'role="alert"' in review and "needs about" in review and "&quot;adapter&quot;: &quot;qlora&quot;" in review
    assert not FineTuneJob.objects.exists()
