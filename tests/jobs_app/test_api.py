"""Creating jobs: every bad input is a 400 naming its param, and no job is created."""

import importlib.util

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
    ("tiny-llama", {"sharding": "fsdp"}, "method.supervised.hyperparameters.sharding",
     "set devices (or nodes) above 1"),
    ("tiny-llama", {"sharding": "fsdp", "devices": 1}, "method.supervised.hyperparameters.sharding",
     "set devices (or nodes) above 1"),
    pytest.param("tiny-llama", {"sharding": "zero2", "devices": 2}, "method.supervised.hyperparameters.sharding",
                 "needs the deepspeed package", marks=pytest.mark.skipif(
                     importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")),
    ("tiny-llama", {"sharding": "ddp", "devices": 2}, "method.supervised.hyperparameters.sharding", '"fsdp"'),
    ("tiny-llama", {"nodes": 0}, "method.supervised.hyperparameters.nodes", "from 1 to 16"),
    ("tiny-llama", {"nodes": 17}, "method.supervised.hyperparameters.nodes", "from 1 to 16"),
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


def test_sharding_is_stored_resolved_next_to_devices(base_model):
    user = make_user()
    client = api_client(user)
    given = _create(client, make_dataset(user).id, devices=2, sharding="fsdp").json()
    assert given["method"]["supervised"]["hyperparameters"]["sharding"] == "fsdp"
    auto = _create(client, make_dataset(user).id, devices=2).json()["method"]["supervised"]["hyperparameters"]
    assert auto["sharding"] == "none" and "sharding" in auto["auto_resolved"]  # no memory estimate says it must


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


PAIRS = [{"prompt": f"Say hi {i}", "chosen": "Hi!", "rejected": "No."} for i in range(8)]
MARKED = [{"prompt": f"Say hi {i}", "completion": "Hi!" if i % 2 else "No.", "label": bool(i % 2)} for i in range(8)]
PROMPTS = [{"messages": [{"role": "user", "content": f"Capital of France? ({i})"}], "answer": "Paris"}
           for i in range(4)]
GRADER = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
          "operation": "ilike"}


def _method(client, dataset_id: str, objective: str, **section):
    body = {"model": "tiny-llama", "training_file": dataset_id, "method": {"type": objective, objective: section}}
    return client.post("/v1/fine_tuning/jobs", body, format="json")


@pytest.mark.parametrize(("objective", "rows", "hyperparameters"), [
    ("orpo", PAIRS, {"odds_ratio_weight": 0.2}),
    ("kto", MARKED, {"beta": 0.2, "desirable_weight": 1.5}),
    ("kto", PAIRS, {}),
])
def test_orpo_and_kto_jobs_take_their_own_options_on_their_rows(base_model, objective, rows, hyperparameters):
    user = make_user()
    response = _method(api_client(user), make_dataset(user, rows=rows).id, objective,
                       hyperparameters=hyperparameters)
    assert response.status_code == 200, response.json()
    body = response.json()
    resolved = body["method"][objective]["hyperparameters"]
    assert body["method"]["type"] == objective and hyperparameters.items() <= resolved.items()
    assert "template" not in resolved and FineTuneJob.objects.get(pk=body["id"]).objective == objective


@pytest.mark.parametrize(("objective", "rows", "section", "param", "words"), [
    ("orpo", MARKED, {}, "training_file", "ORPO needs preference rows"),
    ("kto", PROMPTS, {}, "training_file", "KTO needs unpaired preference rows"),
    ("reinforcement", PAIRS, {"grader": GRADER}, "training_file", "REINFORCEMENT needs prompt only rows"),
    ("orpo", PAIRS, {"hyperparameters": {"beta": 0.1}}, "method.orpo.hyperparameters.beta", "objective dpo or kto"),
    ("kto", MARKED, {"hyperparameters": {"batch_size": 1}}, "method.kto.hyperparameters.batch_size", "at least 2"),
    ("dpo", PAIRS, {"grader": GRADER}, "method.dpo.grader", "leave it out"),
    ("reinforcement", PROMPTS, {}, "method.reinforcement.grader", "needs a grader"),
    ("reinforcement", PROMPTS, {"grader": {**GRADER, "reference": "{{item.solution}}"}},
     "method.reinforcement.grader.reference", "no field 'solution'"),
    ("reinforcement", PROMPTS, {"grader": {**GRADER, "operation": "contains"}},
     "method.reinforcement.grader.operation", "must be one of"),
    ("reinforcement", PROMPTS, {"grader": {"type": "score_model", "model": "no-such-judge",
                                           "input": [{"role": "user", "content": "{{sample.output_text}}"}]}},
     "method.reinforcement.grader.model", "'no-such-judge', which is not a model you can use"),
    ("reinforcement", PROMPTS, {"grader": {"type": "multi", "weights": {"judge": 1}, "graders": {"judge": {
        "type": "score_model", "model": "tiny-llama", "sampling_params": {"temperature": 9},
        "input": [{"role": "user", "content": "{{sample.output_text}}"}]}}}},
     "method.reinforcement.grader.graders.judge.sampling_params.temperature", "from 0 to 2"),
])
def test_a_new_objective_on_the_wrong_rows_or_with_a_bad_option_or_grader_is_400(
        base_model, objective, rows, section, param, words):
    user = make_user()
    response = _method(api_client(user), make_dataset(user, rows=rows).id, objective, **section)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and words in error["message"], error
    assert not FineTuneJob.objects.exists()


def test_a_kto_file_of_good_answers_only_is_refused_naming_the_file(base_model):
    from finetune_site.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=r"^all-good\.jsonl: every answer is marked good .*KTO needs both"):
        make_dataset(make_user(), rows=[{**row, "label": True} for row in MARKED], name="all-good.jsonl")


def test_a_reinforcement_job_stores_its_grader_in_openais_shape(base_model):
    user = make_user()
    response = _method(api_client(user), make_dataset(user, rows=PROMPTS).id, "reinforcement", grader=GRADER,
                       hyperparameters={"num_generations": 2, "max_completion_length": 8})
    body = response.json()
    assert response.status_code == 200, body
    assert body["method"]["reinforcement"]["grader"] == GRADER
    assert body["method"]["reinforcement"]["hyperparameters"]["num_generations"] == 2
    assert FineTuneJob.objects.get(pk=body["id"]).grader == GRADER


def test_graders_run_scores_one_sample_before_any_compute():
    client = api_client(make_user())
    multi = {"type": "multi", "graders": {"exact": GRADER, "close": {
        "type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
        "evaluation_metric": "fuzzy_match"}}, "calculate_output": "0.5 * exact + 0.5 * close"}
    body = client.post("/v1/fine_tuning/alpha/graders/run",
                       {"grader": multi, "model_sample": "paris", "item": {"answer": "Paris"}}, format="json").json()
    assert body["sub_rewards"]["exact"] == 1.0 and 0.5 < body["reward"] < 1.0
    assert body["metadata"]["type"] == "multi" and body["metadata"]["errors"] == []
    bad = client.post("/v1/fine_tuning/alpha/graders/run",
                      {"grader": GRADER, "model_sample": "x", "item": {"solution": "Paris"}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "grader.reference"
    checked = client.post("/v1/fine_tuning/alpha/graders/validate", {"grader": {**GRADER, "operation": "has"}},
                          format="json")
    assert checked.status_code == 400 and checked.json()["error"]["param"] == "grader.operation"


def _create_with(client, dataset_id: str, **fields):
    return client.post("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": dataset_id, **fields},
                       format="json")


def test_metadata_is_stored_returned_and_filters_the_list(base_model):
    user = make_user()
    dataset = make_dataset(user)
    client = api_client(user)
    support = _create_with(client, dataset.id, metadata={"team": "support", "run": "a__b"}).json()
    sales = _create_with(client, dataset.id, metadata={"team": "sales"}).json()
    plain = _create_with(client, dataset.id).json()
    assert support["metadata"] == {"team": "support", "run": "a__b"} and plain["metadata"] is None
    assert client.get(f"/v1/fine_tuning/jobs/{sales['id']}").json()["metadata"] == {"team": "sales"}

    def listed(query: str) -> list[str]:
        return [j["id"] for j in client.get(f"/v1/fine_tuning/jobs?{query}").json()["data"]]

    assert listed("metadata[team]=support") == [support["id"]]
    assert listed("metadata[team]=support&metadata[run]=a__b") == [support["id"]]
    assert listed("metadata[team]=sales&metadata[run]=a__b") == []
    assert listed("") == [plain["id"], sales["id"], support["id"]]


@pytest.mark.parametrize(("metadata", "param"), [
    ({"team": 3}, "metadata.team"),
    ({"k": "v" * 513}, "metadata.k"),
    ({f"k{i}": "v" for i in range(17)}, "metadata"),
    ({"k" * 65: "v"}, "metadata"),
    (["team"], "metadata"),
])
def test_bad_metadata_is_a_400_naming_it(base_model, metadata, param):
    user = make_user()
    response = _create_with(api_client(user), make_dataset(user).id, metadata=metadata)
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert not FineTuneJob.objects.exists()


def test_seed_is_random_when_absent_stored_and_returned(base_model):
    user = make_user()
    dataset = make_dataset(user)
    client = api_client(user)
    seeds = [_create_with(client, dataset.id).json()["seed"] for _ in range(3)]
    assert len(set(seeds)) == 3 and all(0 <= seed < 2**31 for seed in seeds)
    given = _create_with(client, dataset.id, seed=7).json()
    assert given["seed"] == 7 and FineTuneJob.objects.get(pk=given["id"]).seed == 7


@pytest.mark.parametrize(("integrations", "param", "text"), [
    ([{"type": "neptune"}], "integrations[0].type", "must be one of wandb, mlflow, tensorboard"),
    ([{"type": "tensorboard"}, {"type": "comet"}], "integrations[1].type", "not 'comet'"),
    ([{"type": "tensorboard"}, {"type": "tensorboard"}], "integrations[1].type", "named twice"),
    ([{"type": "mlflow", "mlflow": {"experiment": ""}}], "integrations[0].mlflow.experiment", "1 to 256"),
    ([{"type": "mlflow", "mlflow": {"tracking_uri": "/etc/passwd"}}], "integrations[0].mlflow.tracking_uri",
     "MLflow server URL"),
    ([{"type": "mlflow", "mlflow": {"colour": "red"}}], "integrations[0].mlflow.colour", "no field 'colour'"),
    ([{"type": "tensorboard", "wandb": {}}], "integrations[0].wandb", "no field 'wandb'"),
    ("wandb", "integrations", "a list"),
])
def test_bad_integrations_are_400s_naming_the_field_and_store_nothing(base_model, integrations, param, text):
    user = make_user()
    response = _create_with(api_client(user), make_dataset(user).id, integrations=integrations)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and text in error["message"], error
    assert not FineTuneJob.objects.exists()


def test_tracker_not_installed_is_a_400_for_the_operator(base_model, monkeypatch):
    import jobs_app.services.tracking as tracking

    found = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else found(name))
    user = make_user()
    response = _create_with(api_client(user), make_dataset(user).id,
                            integrations=[{"type": "wandb", "wandb": {"project": "p", "tags": ["x"]}}])
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "integrations[0].type"
    assert "operator must install it (pip install wandb)" in error["message"]
    assert not FineTuneJob.objects.exists()


def test_integrations_are_stored_and_the_job_says_where_each_tracker_holds_the_run(base_model, settings):
    settings.MLFLOW_TRACKING_URI = ""
    user = make_user()
    client = api_client(user)
    given = [{"type": "tensorboard"}, {"type": "mlflow", "mlflow": {"experiment": "support-bot"}}]
    body = _create_with(client, make_dataset(user).id, integrations=given).json()
    assert body["integrations"] == given
    tensorboard, mlflow = body["tracking"]
    assert tensorboard == {"type": "tensorboard", "location": f"jobs/{body['id']}/tensorboard",
                           "url": f"/v1/fine_tuning/jobs/{body['id']}/tensorboard"}
    assert mlflow["location"].startswith("sqlite:///") and "experiment support-bot" in mlflow["location"]
    served = {"type": "mlflow", "mlflow": {"tracking_uri": "https://mlflow.example.com"}}
    other = _create_with(client, make_dataset(user).id, integrations=[served]).json()
    assert other["tracking"][0]["url"] == "https://mlflow.example.com"
    assert client.get(f"/v1/fine_tuning/jobs/{body['id']}/tensorboard").status_code == 404  # nothing trained yet
    assert _create_with(client, make_dataset(user).id, integrations=[]).json()["integrations"] == []


def test_succeeded_jobs_result_file_is_listed_downloadable_and_not_training_data(base_model):
    from jobs_app.services import job_result_file_create
    from tests.factories import make_job, make_metric

    job = make_job(status=FineTuneJob.Status.SUCCEEDED)
    make_metric(job, 1, total_steps=1)
    FineTuneJob.objects.filter(pk=job.pk).update(result_file=job_result_file_create(job))
    client = api_client(job.owner)
    body = client.get(f"/v1/fine_tuning/jobs/{job.id}").json()
    [file_id] = body["result_files"]
    file = client.get(f"/v1/files/{file_id}").json()
    assert (file["purpose"], file["status"], file["filename"]) == ("fine-tune-results", "processed",
                                                                   f"step_metrics_{job.id}.csv")
    content = b"".join(client.get(f"/v1/files/{file_id}/content",
                                  HTTP_ACCEPT="application/binary").streaming_content).decode()
    assert content.splitlines()[1].startswith("1,2.0,")
    assert api_client(make_user()).get(f"/v1/files/{file_id}/content").status_code == 404
    response = _create_with(client, file_id)
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"


JUDGE = {"type": "score_model", "name": "judge", "range": [0, 10],
         "input": [{"role": "system", "content": "Score the answer to {{item.messages}} from 0 to 10."},
                   {"role": "user", "content": "{{sample.output_text}}"}]}


def _tuned(owner, adapter):
    from models_app.services import fine_tuned_model_create
    from tests.factories import make_job

    return fine_tuned_model_create(job=make_job(owner), adapter_dir=adapter)


def test_a_score_model_judge_is_a_base_model_or_a_tuned_model_of_the_user_and_no_one_elses(
        base_model, untrained_adapter):
    user, other = make_user(), make_user()
    mine, theirs = _tuned(user, untrained_adapter), _tuned(other, untrained_adapter)
    client = api_client(user)
    dataset = make_dataset(user, rows=PROMPTS)
    for model in ("tiny-llama", mine.id, f"{mine.name}@v{mine.version}"):
        response = _method(client, dataset.id, "reinforcement", grader={**JUDGE, "model": model})
        assert response.status_code == 200, response.json()
    before = FineTuneJob.objects.count()
    for model in (theirs.id, "gpt-4o"):  # (their "name@v1" is the user's own name@v1: names are per owner)
        response = _method(client, dataset.id, "reinforcement", grader={**JUDGE, "model": model})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == "method.reinforcement.grader.model", error
        assert repr(model) in error["message"]
        checked = client.post("/v1/fine_tuning/alpha/graders/validate", {"grader": {**JUDGE, "model": model}},
                              format="json")
        assert checked.status_code == 400 and checked.json()["error"]["param"] == "grader.model"
    assert FineTuneJob.objects.count() == before


def test_graders_run_asks_the_users_tuned_judge_and_reads_its_number(base_model, judge_adapter):
    user = make_user()
    judge = _tuned(user, judge_adapter)  # it answers "7" to any question
    client = api_client(user)
    body = client.post("/v1/fine_tuning/alpha/graders/run", {
        "grader": {**JUDGE, "model": judge.id}, "model_sample": "sports",
        "item": {"messages": [{"role": "user", "content": "Classify: the team won"}]}}, format="json").json()
    assert body["reward"] == 7.0 and body["metadata"]["errors"] == [], body
    halved = client.post("/v1/fine_tuning/alpha/graders/run", {
        "grader": {"type": "multi", "graders": {"judge": {**JUDGE, "model": judge.id, "range": [0, 5]}},
                   "calculate_output": "judge / 5"}, "model_sample": "sports", "item": {"messages": []}},
        format="json").json()
    assert halved["reward"] == 1.0 and halved["sub_rewards"]["judge"] == 5.0
    unseen = api_client(make_user()).post("/v1/fine_tuning/alpha/graders/run", {
        "grader": {**JUDGE, "model": judge.id}, "model_sample": "x", "item": {"messages": []}}, format="json")
    assert unseen.status_code == 400 and unseen.json()["error"]["param"] == "grader.model"


@pytest.mark.parametrize(("fields", "param"), [
    ({"validaton_file": "file-abc"}, "validaton_file"),
    ({"hyperparameters": {"n_epochs": 1}, "sufix": "x"}, "sufix"),
    ({"method": {"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 1}}}}, "method.supervised"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameter": {"n_epochs": 1}}}},
     "method.supervised.hyperparameter"),
])
def test_an_unknown_or_misplaced_field_is_a_400_naming_it_not_dropped(base_model, fields, param):
    user = make_user()
    client = api_client(user)
    for path in ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/estimate"):
        response = client.post(path, {"model": "tiny-llama", "training_file": make_dataset(user).id, **fields},
                               format="json")
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == param, response.json()
        assert "Unrecognized request argument supplied" in error["message"]
    assert not FineTuneJob.objects.exists()


def test_a_null_section_of_another_objective_is_accepted(base_model):
    user = make_user()
    response = _create_with(api_client(user), make_dataset(user).id, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}, "dpo": None})
    assert response.status_code == 200 and response.json()["hyperparameters"]["n_epochs"] == 1


@pytest.mark.parametrize("field", ["model", "training_file", "validation_file"])
def test_a_megabyte_name_is_refused_without_being_quoted_back(base_model, field):
    user = make_user()
    body = {"model": "tiny-llama", "training_file": make_dataset(user).id, field: "x" * 2**20}
    response = api_client(user).post("/v1/fine_tuning/jobs", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["param"] == field
    assert len(response.content) < 1000
