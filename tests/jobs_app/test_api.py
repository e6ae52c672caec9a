"""Creating jobs: every bad input is a 400 naming its param, and no job is created."""

import pytest

from jobs_app.models import FineTuneJob
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db


def _create(client, dataset_id: str, model: str = "tiny-llama", **hyperparameters):
    body = {"model": model, "training_file": dataset_id,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}}
    return client.post("/v1/fine_tuning/jobs", body, format="json")


def test_create_resolves_auto_hyperparameters_and_returns_openai_job(base_model):
    user = make_user()
    dataset = make_dataset(user)
    body = _create(api_client(user), dataset.id, n_epochs=2, adapter="lora").json()
    assert body["object"] == "fine_tuning.job" and body["status"] == "validating_files"
    assert body["training_file"] == dataset.id and body["model"] == "tiny-llama"
    resolved = body["method"]["supervised"]["hyperparameters"]
    assert resolved["n_epochs"] == 2 and resolved["batch_size"] == 4  # 16 rows -> auto 4
    assert resolved["learning_rate"] == 1e-3 and resolved["lora_alpha"] == 32
    assert body["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert FineTuneJob.objects.get(pk=body["id"]).hyperparameters == resolved


@pytest.mark.parametrize(("model", "hyperparameters", "param", "text"), [
    ("no-such-model", {}, "model", "unknown base model 'no-such-model'"),
    ("tiny-llama", {"n_epochs": -1}, "method.supervised.hyperparameters.n_epochs", "from 1 to 100"),
    ("tiny-llama", {"n_epochs": "three"}, "method.supervised.hyperparameters.n_epochs", "integer"),
    ("tiny-llama", {"learning_rate": 0}, "method.supervised.hyperparameters.learning_rate", "above 0"),
    ("tiny-llama", {"adapter": "dpo"}, "method.supervised.hyperparameters.adapter", "must be one of"),
    ("tiny-llama", {"adapter": "qlora", "quantization": "int4"}, "method.supervised.hyperparameters.quantization",
     "nf4"),
    ("tiny-llama", {"devices": 0}, "method.supervised.hyperparameters.devices", "from 1 to 64"),
    ("tiny-llama", {"max_length": 4096}, "method.supervised.hyperparameters.max_length", "context of 2048"),
    ("tiny-llama", {"warp_speed": 9}, "method.supervised.hyperparameters.warp_speed", "is not a hyperparameter"),
    ("tiny-llama", {"template": "vicuna"}, "method.supervised.hyperparameters.template", '"chatml", "llama3"'),
])
def test_bad_job_input_is_400_with_param_and_creates_nothing(base_model, model, hyperparameters, param, text):
    user = make_user()
    response = _create(api_client(user), make_dataset(user).id, model=model, **hyperparameters)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and text in error["message"]
    assert not FineTuneJob.objects.exists()


def test_missing_training_file_is_400(base_model):
    response = api_client(make_user()).post("/v1/fine_tuning/jobs", {"model": "tiny-llama"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"


def test_unsupported_method_type_is_400(base_model):
    user = make_user()
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id, "method": {"type": "ppo"}}
    response = api_client(user).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == "method.type"


def test_dpo_on_chat_data_is_400_naming_the_file(base_model):
    user = make_user()
    dataset = make_dataset(user)
    body = {"model": "tiny-llama", "training_file": dataset.id,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}}
    response = api_client(user).post("/v1/fine_tuning/jobs", body, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "training_file"
    assert "DPO needs preference rows" in error["message"] and not FineTuneJob.objects.exists()


def test_supervised_on_preference_pairs_is_400(base_model):
    user = make_user()
    dataset = make_dataset(user, rows=[{"prompt": "a", "chosen": "b", "rejected": "c"}])
    response = _create(api_client(user), dataset.id)
    assert response.status_code == 400 and "preference" in response.json()["error"]["message"]


def test_job_list_pages_newest_first(base_model):
    user = make_user()
    dataset = make_dataset(user)
    client = api_client(user)
    ids = [_create(client, dataset.id).json()["id"] for _ in range(3)]
    page = client.get("/v1/fine_tuning/jobs?limit=2").json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get(f"/v1/fine_tuning/jobs?limit=2&after={page['data'][-1]['id']}").json()
    assert [j["id"] for j in rest["data"]] == ids[:1] and rest["has_more"] is False


def test_bad_limit_is_400(base_model):
    response = api_client(make_user()).get("/v1/fine_tuning/jobs?limit=0")
    assert response.status_code == 400 and response.json()["error"]["param"] == "limit"


def test_schema_documents_the_extension_hyperparameters():
    response = api_client(make_user()).get("/v1/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert "lora_target_modules" in response.content.decode()


@pytest.mark.parametrize(("given", "stored"), [({}, ""), ({"template": "auto"}, ""), ({"template": ""}, ""),
                                               ({"template": "chatml"}, "chatml"),
                                               ({"template": "completion"}, "completion")])
def test_template_is_stored_resolved_on_the_job(base_model, given, stored):
    user = make_user()
    body = _create(api_client(user), make_dataset(user).id, **given).json()
    assert body["method"]["supervised"]["hyperparameters"]["template"] == stored
