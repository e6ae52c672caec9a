"""A recipe is checked whole before anything runs: each bad field is a 400 whose param names it inside the
recipe, and nothing is stored (no pipeline, no run, no dataset version, no job)."""

import copy
from pathlib import Path

import pytest

from datasets_app.models import Dataset
from jobs_app.models import FineTuneJob
from pipelines_app.models import Pipeline, PipelineRun
from tests.api import api_client
from tests.factories import make_dataset, make_user

pytestmark = pytest.mark.django_db


def recipe(file_id: str) -> dict:
    return {
        "name": "topics",
        "inputs": {"dataset": file_id},
        "steps": [
            {"id": "clean", "type": "prepare", "dataset": "${inputs.dataset}", "operations": [{"op": "clean"}]},
            {"id": "dedup", "type": "prepare", "dataset": "${steps.clean.dataset}",
             "operations": [{"op": "dedup"}, {"op": "split", "validation_share": 0.25}]},
            {"id": "train", "type": "train", "model": "tiny-llama", "training_file": "${steps.dedup.dataset}",
             "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}},
            {"id": "evaluate", "type": "evaluate", "model": "${steps.train.model}",
             "dataset": "${steps.dedup.validation}", "max_rows": 4,
             "gate": {"metric": "eval_loss", "min_improvement": 0.0}},
            {"id": "export", "type": "export", "needs": ["evaluate"], "model": "${steps.train.model}",
             "kind": "adapter"},
        ],
    }


@pytest.fixture
def owner(base_model):
    return make_user()


@pytest.fixture
def dataset(owner):
    return make_dataset(owner)


def _post(owner, body, **kwargs):
    return api_client(owner).post("/v1/pipelines", body, format="json", **kwargs)


def _refused(owner, body, param: str, *words: str, code: str | None = None) -> dict:
    datasets_before = Dataset.objects.count()
    response = _post(owner, body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], error
    if code:
        assert error["code"] == code, error
    assert not Pipeline.objects.exists() and not PipelineRun.objects.exists()
    assert not FineTuneJob.objects.exists() and Dataset.objects.count() == datasets_before
    return error


def _with(body: dict, index: int, **changes) -> dict:
    body = copy.deepcopy(body)
    body["steps"][index].update(changes)
    return body


def test_a_valid_recipe_is_stored_in_running_order_with_needs_inferred(owner, dataset):
    body = recipe(dataset.id)
    body["steps"].reverse()  # the order given does not matter; the references do
    response = _post(owner, body)
    assert response.status_code == 200, response.content
    pipeline = response.json()
    assert pipeline["id"].startswith("pipe-")
    steps = {s["id"]: s for s in pipeline["recipe"]["steps"]}
    assert [s["id"] for s in pipeline["recipe"]["steps"]] == ["clean", "dedup", "train", "evaluate", "export"]
    assert steps["evaluate"]["needs"] == ["train", "dedup"]
    assert sorted(steps["export"]["needs"]) == ["evaluate", "train"]
    assert steps["export"]["settings"]["quantization"] == "f32"  # the export's default, filled in
    assert pipeline["latest_run"]["status"] == "running"
    assert {s["id"]: s["status"] for s in pipeline["latest_run"]["steps"]} == dict.fromkeys(steps, "pending")


def test_a_yaml_recipe_is_read_like_json(owner, dataset):
    text = f"""
name: topics
inputs: {{dataset: {dataset.id}}}
steps:
  - id: clean
    type: prepare
    dataset: ${{inputs.dataset}}
    operations: [{{op: clean}}]
  - id: train
    type: train
    model: tiny-llama
    training_file: ${{steps.clean.dataset}}
    method: {{type: supervised, supervised: {{hyperparameters: {{n_epochs: auto}}}}}}
"""
    response = api_client(owner).generic("POST", "/v1/pipelines", text, content_type="application/yaml")
    assert response.status_code == 200, response.content
    assert [s["id"] for s in response.json()["recipe"]["steps"]] == ["clean", "train"]


def test_bad_yaml_is_a_400(owner):
    response = api_client(owner).generic("POST", "/v1/pipelines", "steps: [unclosed", content_type="application/yaml")
    assert response.status_code == 400 and "YAML" in response.json()["error"]["message"]
    assert not Pipeline.objects.exists()


def test_unknown_step_type_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 2, type="distill"), "steps[2].type", "distill", "prepare")


def test_a_bad_training_option_names_it_inside_the_step(owner, dataset):
    body = _with(recipe(dataset.id), 2, method={"type": "supervised",
                                                 "supervised": {"hyperparameters": {"n_epochs": -3}}})
    _refused(owner, body, "steps[2].method.supervised.hyperparameters.n_epochs", code="invalid_hyperparameter")


def test_an_unknown_base_model_names_the_step_model(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 2, model="no-such-model"), "steps[2].model")


def test_a_bad_prepare_operation_names_it(owner, dataset):
    body = _with(recipe(dataset.id), 0, operations=[{"op": "clean", "unicode": "nfzz"}])
    _refused(owner, body, "steps[0].operations[0].unicode")


def test_an_unknown_operation_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 0, operations=[{"op": "shuffle"}]), "steps[0].operations[0].op")


def test_a_bad_export_kind_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 4, kind="onnx"), "steps[4].kind", "adapter")


def test_an_adapter_export_of_a_full_fine_tune_is_refused(owner, dataset):
    body = _with(recipe(dataset.id), 2, method={"type": "supervised", "supervised": {"hyperparameters": {
        "adapter": "full", "n_epochs": 1}}})
    _refused(owner, body, "steps[4].kind", "no adapter")


def test_a_bad_gate_names_it_under_gate(owner, dataset):
    body = _with(recipe(dataset.id), 3, gate={"metric": "vibes"})
    _refused(owner, body, "steps[3].gate.metric")


def test_evaluation_limits_name_the_field(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 3, max_rows=0), "steps[3].max_rows")


def test_a_cycle_is_refused_naming_it(owner, dataset):
    body = _with(recipe(dataset.id), 0, needs=["train"])
    error = _refused(owner, body, "steps[0].needs", "cycle", code="pipeline_cycle")
    assert "clean → train → dedup → clean" in error["message"]


def test_an_export_of_a_dataset_is_an_input_shape_mismatch(owner, dataset):
    body = _with(recipe(dataset.id), 4, model="${steps.dedup.dataset}")
    _refused(owner, body, "steps[4].model", "takes a model", "is a dataset", code="input_shape_mismatch")


def test_training_on_a_model_is_an_input_shape_mismatch(owner, dataset):
    body = _with(recipe(dataset.id), 2, training_file="${steps.evaluate.model}")
    _refused(owner, body, "steps[2].training_file", "takes a dataset", code="input_shape_mismatch")


def test_a_validation_output_needs_a_split(owner, dataset):
    body = _with(recipe(dataset.id), 1, operations=[{"op": "dedup"}])
    _refused(owner, body, "steps[3].dataset", "split")


def test_a_reference_to_an_unknown_step_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 4, model="${steps.trian.model}"), "steps[4].model", "trian")


def test_an_unknown_output_names_what_the_step_gives(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 4, model="${steps.train.weights}"), "steps[4].model", "model")


def test_a_literal_instead_of_a_reference_is_refused(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 0, dataset=dataset.id), "steps[0].dataset", "${inputs.dataset}")


def test_an_unknown_need_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 4, needs=["evaluation"]), "steps[4].needs[0]", "evaluation")


def test_duplicate_step_ids_are_refused(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 1, id="clean"), "steps[1].id", "clean")


def test_an_unknown_setting_names_it(owner, dataset):
    _refused(owner, _with(recipe(dataset.id), 4, format="zip"), "steps[4].format")


def test_a_missing_required_setting_names_it(owner, dataset):
    body = recipe(dataset.id)
    del body["steps"][2]["model"]
    _refused(owner, body, "steps[2].model")


def test_another_users_dataset_is_no_such_file(owner, dataset):
    other = make_dataset(make_user())
    _refused(owner, recipe(other.id), "inputs.dataset", "No such file", code="file_not_found")


def test_an_empty_recipe_names_inputs(owner):
    _refused(owner, {}, "inputs")


def test_no_steps_is_refused(owner, dataset):
    _refused(owner, {"inputs": {"dataset": dataset.id}, "steps": []}, "steps")


def test_a_pipeline_of_another_user_is_not_found(owner, dataset):
    pipeline_id = _post(owner, recipe(dataset.id)).json()["id"]
    assert api_client(make_user()).get(f"/v1/pipelines/{pipeline_id}").status_code == 404
    assert api_client(owner).get(f"/v1/pipelines/{pipeline_id}").status_code == 200
    listed = api_client(owner).get("/v1/pipelines").json()["data"]
    assert [p["id"] for p in listed] == [pipeline_id]


def test_the_readme_recipe_is_accepted_as_written(owner, dataset):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Pipelines"):]
    text = section[section.index("```yaml\n") + len("```yaml\n"):section.index("```\n")]
    response = api_client(owner).generic("POST", "/v1/pipelines", text.replace("file-abc123", dataset.id),
                                         content_type="application/yaml")
    assert response.status_code == 200, response.content
    assert [s["id"] for s in response.json()["recipe"]["steps"]] == ["clean", "dedup", "train", "evaluate", "export"]
