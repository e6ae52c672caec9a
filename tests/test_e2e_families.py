"""A user's own base model of another family (Qwen2, built locally) through the whole product: registered
by a real worker, trained, evaluated against its base, exported and answering chat on the inference worker."""

import pytest
import requests

from tests.e2e import client_for, upload, wait_finished, wait_for
from tests.test_e2e_evaluation import _evaluation_of
from tests.test_e2e_export import _Api
from workers.sample_data import classification_rows

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_qwen2_base_model_registers_trains_evaluates_exports_and_answers(
        live_server, live_base_model, worker_pool, inference_worker, tiny_families, settings):
    folder = str(tiny_families["qwen2"].parent)
    settings.BASE_MODEL_DIRS = [tiny_families["qwen2"].parent]  # the web side checks the source is allowed
    worker_pool.ensure({"BASE_MODEL_DIRS": folder})
    try:
        client, _ = client_for(live_server)
        api = _Api(live_server.url, client.api_key)
        registered = requests.post(f"{live_server.url}/v1/base_models", headers=api.headers, timeout=30,
                                   json={"name": "my-qwen", "source": str(tiny_families["qwen2"])})
        assert registered.status_code in (200, 201), registered.text
        described = wait_for(lambda: (b := api.get("/v1/base_models/my-qwen").json())["status"] != "pending" and b,
                             timeout=60, what="the base model to be described")
        assert described["status"] == "ready" and described["architecture"] == "Qwen2ForCausalLM", described

        train = upload(client, classification_rows(16))
        valid = upload(client, classification_rows(4, seed=5), name="valid.jsonl")
        job = client.fine_tuning.jobs.create(model="my-qwen", training_file=train.id, validation_file=valid.id,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1}}})
        job = wait_finished(client, job.id)
        assert job.status == "succeeded", job.error
        assert job.fine_tuned_model.startswith("ft:my-qwen:")
        evaluation = _evaluation_of(live_server, client.api_key, job.fine_tuned_model)
        assert evaluation["status"] == "succeeded", evaluation
        merged = api.export(job.fine_tuned_model, {"kind": "merged"})
        assert merged["status"] == "verified", merged["error"]
        refused = requests.post(f"{live_server.url}/v1/registry/models/{job.fine_tuned_model}/exports",
                                json={"kind": "gguf"}, headers=api.headers, timeout=30)
        assert refused.status_code == 400 and "qwen2" in refused.text  # said at export time, nothing queued
        reply = client.chat.completions.create(model=job.fine_tuned_model, temperature=0, max_tokens=4,
                                               messages=[{"role": "user", "content": "Classify: The team won."}])
        assert reply.model == job.fine_tuned_model and reply.usage.completion_tokens > 0
    finally:
        worker_pool.ensure()  # back to the default worker for the other tests
