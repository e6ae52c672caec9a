"""The whole product through the official openai client, a live server and a real worker."""

import io
import zipfile

import pytest

from tests.e2e import client_for, start_job, upload, wait_finished
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_job_trains_an_adapter_that_learned_the_task(live_server, live_base_model, worker, tmp_path,
                                                     tiny_model_path):
    client, _ = client_for(live_server)
    file = upload(client)
    assert file.id.startswith("file-") and file.status == "processed"
    job = start_job(client, file.id)
    assert job.id.startswith("ftjob-") and job.status == "validating_files"
    assert job.method.supervised.hyperparameters.n_epochs == 8

    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    assert job.trained_tokens > 0 and job.fine_tuned_model.startswith("ft:tiny-llama:")

    losses = _losses(client, job.id)
    assert len(losses) == 24  # 24 rows / batch 8 * 8 epochs, one metric event per step
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 * 0.7

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [24, 21, 18, 15, 12, 9, 6, 3][: len(checkpoints)]
    assert checkpoints[0].id.startswith("ftckpt-")

    model = client.models.retrieve(job.fine_tuned_model)
    assert model.id == job.fine_tuned_model
    assert job.fine_tuned_model in [m.id for m in client.models.list().data]

    adapter = _download_adapter(client, model.id, tmp_path)
    _assert_adapter_learned(adapter, tiny_model_path)


def _losses(client, job_id: str) -> list[float]:
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=10))  # pages through all
    metrics = sorted((e for e in events if e.type == "metrics"), key=lambda e: e.data["step"])
    assert [e.data["step"] for e in metrics] == list(range(1, len(metrics) + 1))
    return [e.data["train_loss"] for e in metrics]


def _download_adapter(client, model_id: str, tmp_path):
    response = client.get(f"/models/{model_id}/download", cast_to=bytes, options={"params": {"artifact": "adapter"}})
    zipfile.ZipFile(io.BytesIO(response)).extractall(tmp_path)
    return tmp_path / "adapter"


def _assert_adapter_learned(adapter, base_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter)
    rows = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in classification_rows(24)[:8]]
    base_right = sum(_greedy(base, tokenizer, p) == label for p, label in rows)
    tuned_right = sum(_greedy(tuned, tokenizer, p) == label for p, label in rows)
    assert (base_right, tuned_right >= 6) == (0, True), (base_right, tuned_right)


def _greedy(model, tokenizer, prompt: str) -> str:
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_job_with_a_chosen_template_trains_with_it_and_its_tokenizer_carries_it(live_server, live_base_model, worker,
                                                                                tmp_path):
    from transformers import AutoTokenizer

    from workers.templates import TEMPLATES

    client, _ = client_for(live_server)
    file = upload(client, rows=classification_rows(8))
    job = start_job(client, file.id, n_epochs=1, template="chatml")
    assert job.to_dict()["method"]["supervised"]["hyperparameters"]["template"] == "chatml"
    job = wait_finished(client, job.id)
    assert job.status == "succeeded", job.error
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert any("template chatml" in message for message in events)
    adapter = _download_adapter(client, job.fine_tuned_model, tmp_path)
    assert AutoTokenizer.from_pretrained(adapter).chat_template == TEMPLATES["chatml"]


def test_files_content_and_list_order_through_the_official_client(live_server):
    client, _ = client_for(live_server)
    first, second = upload(client, rows=classification_rows(8)), upload(client, rows=classification_rows(9))
    assert client.files.content(first.id).read().count(b"\n") == 8
    assert [f.id for f in client.files.list(order="asc", limit=1)] == [first.id, second.id]  # pages through
    assert [f.id for f in client.files.list(order="desc").data] == [second.id, first.id]
    assert client.files.list(purpose="fine-tune-results").data == []


def test_job_metadata_seed_and_integrations_through_the_official_client(live_server, live_base_model):
    import openai

    client, _ = client_for(live_server)
    file = upload(client, rows=classification_rows(8))
    tagged = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id, metadata={"team": "support"})
    plain = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id, seed=11)
    assert tagged.metadata == {"team": "support"} and plain.seed == 11 and tagged.seed is not None
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "support"})] == [tagged.id]
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=file.id,
                                       integrations=[{"type": "comet", "comet": {"project": "p"}}])
    assert refused.value.body["param"] == "integrations[0].type"
