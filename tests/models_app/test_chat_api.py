"""POST /v1/chat/completions before any worker is asked: validation, model access, what is queued."""

import json

import pytest

from accounts_app.selectors import project_personal
from models_app.services import fine_tuned_model_create
from tests.api import api_client
from tests.factories import make_job, make_user
from workers.sample_data import tool_call_row

pytestmark = pytest.mark.django_db
URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]
TOOLS = tool_call_row()["tools"]


@pytest.fixture
def queued(monkeypatch):
    """What the view queues for the inference worker; the worker's answer is played back right away."""
    from finetune_site.errors import Unavailable
    from models_app.services import inference

    calls = []

    def queue(*, model, config, reply_channel, tag=""):
        calls.append({"model": model, "config": config})
        raise Unavailable("no worker in this test", code="inference_unavailable")

    monkeypatch.setattr(inference, "chat_completion_queue", queue)
    return calls


@pytest.mark.parametrize("body, param", [
    ({"messages": HELLO}, "model"),
    ({"model": "tiny-llama"}, "messages"),
    ({"model": "tiny-llama", "messages": []}, "messages"),
    ({"model": "tiny-llama", "messages": "hello"}, "messages"),
    ({"model": "tiny-llama", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"model": "tiny-llama", "messages": [*HELLO, {"role": "user"}]}, "messages.1.content"),
    ({"model": "tiny-llama", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages.0.content"),
    ({"model": "tiny-llama", "messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"model": "tiny-llama", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": "tiny-llama", "messages": HELLO, "top_p": 0}, "top_p"),
    ({"model": "tiny-llama", "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny-llama", "messages": HELLO, "max_tokens": 5000}, "max_tokens"),
    ({"model": "tiny-llama", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "tiny-llama", "messages": HELLO, "stop": 3}, "stop"),
    ({"model": "tiny-llama", "messages": HELLO, "n": 9}, "n"),
    ({"model": "tiny-llama", "messages": HELLO, "presence_penalty": 2.5}, "presence_penalty"),
    ({"model": "tiny-llama", "messages": HELLO, "frequency_penalty": -3}, "frequency_penalty"),
    ({"model": "tiny-llama", "messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
    ({"model": "tiny-llama", "messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"model": "tiny-llama", "messages": HELLO, "response_format": {"type": "json_schema"}}, "response_format.type"),
    ({"model": "tiny-llama", "messages": HELLO, "response_format": "json"}, "response_format.type"),
    ({"model": "tiny-llama", "messages": HELLO, "response_format": {"type": "json_object"}, "stop": "}"}, "stop"),
    ({"model": "tiny-llama", "messages": HELLO, "response_format": {"type": "json_object"}, "tools": TOOLS},
     "response_format"),
    ({"model": "tiny-llama", "messages": HELLO, "logit_bias": {"50256": -100}}, "logit_bias"),
    ({"model": "tiny-llama", "messages": HELLO, "tools": [{"type": "function"}]}, "tools.0.function.name"),
    ({"model": "tiny-llama", "messages": HELLO, "tools": {"name": "f"}}, "tools"),
    ({"model": "tiny-llama", "messages": HELLO, "tools": json.dumps(TOOLS)}, "tools"),
    ({"model": "tiny-llama", "messages": HELLO, "tool_choice": "required"}, "tool_choice"),  # no tools to call
    ({"model": "tiny-llama", "messages": HELLO, "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),  # not offered
    ({"model": "tiny-llama", "messages": HELLO, "tools": TOOLS, "tool_choice": "any"}, "tool_choice"),
    ({"model": "tiny-llama", "messages": HELLO, "functions": [{"name": "f"}]}, "functions"),
    ({"model": "tiny-llama", "messages": HELLO, "tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"model": "tiny-llama", "messages": [*HELLO, {"role": "tool", "content": "sunny"}]}, "messages.1.role"),
    ({"model": "tiny-llama", "messages": [{"role": "user", "content": None}]}, "messages.0.content"),
    ({"model": "tiny-llama", "messages": [*HELLO, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "[1]"}}]}]},
     "messages.1.tool_calls.0.function.arguments"),
    ({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi", "tool_calls": []}]},
     "messages.0.tool_calls"),
    ({"model": "tiny-llama", "messages": HELLO, "seed": "x"}, "seed"),
    ({"model": "tiny-llama", "messages": HELLO, "stream": "maybe"}, "stream"),
])
def test_bad_body_is_a_400_naming_the_param(base_model, queued, body, param):
    response = api_client(make_user()).post(URL, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error") and error["message"]
    assert queued == []


def test_role_error_says_which_roles_exist(base_model, queued):
    response = api_client(make_user()).post(URL, {"model": "tiny-llama", "messages": [{"role": "robot",
                                                                                       "content": "hi"}]},
                                            format="json")
    assert "role must be one of system, user, assistant" in response.json()["error"]["message"]


def test_unknown_and_other_users_models_are_404_model_not_found(base_model, trained_adapter, queued):
    theirs = fine_tuned_model_create(job=make_job(make_user()), adapter_dir=trained_adapter)
    client = api_client(make_user())
    for model in ("no-such-model", theirs.id):
        response = client.post(URL, {"model": model, "messages": HELLO}, format="json")
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_found", "model")
        assert "does not exist or you do not have access to it" in error["message"]
    assert queued == []


def test_sampling_settings_reach_the_worker(base_model, trained_adapter, queued):
    owner = make_user()
    mine = fine_tuned_model_create(job=make_job(owner), adapter_dir=trained_adapter)
    body = {"model": mine.id, "temperature": 0, "top_p": 0.5, "max_completion_tokens": 9, "max_tokens": 3,
            "seed": 4, "stop": "\n", "messages": [{"role": "developer", "content": "be brief"},
                                                   {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                                {"type": "text", "text": "there"}]}]}
    response = api_client(owner).post(URL, body, format="json")
    assert response.status_code == 503  # the fixture's stand-in for a missing worker
    assert queued[0]["model"] == mine
    assert queued[0]["config"] == {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        "max_tokens": 9, "temperature": 0.0, "top_p": 0.5, "seed": 4, "stop": ["\n"]}


def test_anonymous_caller_is_a_401(base_model):
    from rest_framework.test import APIClient

    response = APIClient().post(URL, {"model": "tiny-llama", "messages": HELLO}, format="json")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_no_inference_worker_is_a_503_naming_the_queue(base_model, inference_pool, settings):
    inference_pool.stop()
    settings.INFERENCE_TIMEOUT_SECONDS = 1
    response = api_client(make_user()).post(URL, {"model": "tiny-llama", "messages": HELLO}, format="json")
    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("inference_unavailable", "server_error")
    assert "`inference` queue" in error["message"]


def test_registry_reference_names_the_version_it_points_at(base_model, trained_adapter, queued):
    owner = make_user()
    mine = fine_tuned_model_create(job=make_job(owner), adapter_dir=trained_adapter)
    response = api_client(owner).post(URL, {"model": f"{mine.name}@v{mine.version}", "messages": HELLO},
                                      format="json")
    assert response.status_code == 503 and queued[0]["model"] == mine
    stranger = api_client(make_user()).post(URL, {"model": f"{mine.name}@v{mine.version}", "messages": HELLO},
                                            format="json")
    assert stranger.status_code == 404


def _checkpoint(job, step: int = 3):
    from jobs_app.models import Checkpoint

    return Checkpoint.objects.create(job=job, step=step, storage_path=f"jobs/{job.id}/checkpoints/step-{step}")


def test_fine_tuned_model_is_named_in_openais_shape_with_the_project_as_org(base_model, trained_adapter):
    from jobs_app.services import job_create
    from tests.factories import make_dataset

    owner = make_user("Acme Labs.1")
    job = job_create(owner=owner, training_file=make_dataset(owner).id, model="tiny-llama", suffix="bot")
    model = fine_tuned_model_create(job=job, adapter_dir=trained_adapter)
    assert model.id == f"ft:tiny-llama:{job.project_id}:bot:{job.id[6:14]}" == job.fine_tuned_model_name
    assert job.project_id == project_personal(owner).id
    body = api_client(owner).get(f"/v1/fine_tuning/jobs/{job.id}/checkpoints").json()
    assert body["data"] == []
    checkpoint = _checkpoint(job)
    [listed] = api_client(owner).get(f"/v1/fine_tuning/jobs/{job.id}/checkpoints").json()["data"]
    assert listed["fine_tuned_model_checkpoint"] == f"{model.id}:ckpt-step-3" == checkpoint.fine_tuned_model_checkpoint


def test_a_checkpoint_by_id_or_name_is_a_chat_model_for_its_owner_only(base_model, queued):
    job = make_job()
    checkpoint = _checkpoint(job)
    for model in (checkpoint.id, checkpoint.fine_tuned_model_checkpoint, f"{job.id}:ckpt-step-3"):
        response = api_client(job.owner).post(URL, {"model": model, "messages": HELLO}, format="json")
        assert response.status_code == 503 and queued[-1]["model"] == checkpoint, response.content
    for model, user in ((checkpoint.id, make_user()), (f"{job.fine_tuned_model_name}:ckpt-step-4", job.owner)):
        response = api_client(user).post(URL, {"model": model, "messages": HELLO}, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_choices_penalties_and_logprobs_reach_the_worker_and_plain_text_format_is_accepted(base_model, queued):
    body = {"model": "tiny-llama", "messages": HELLO, "n": 3, "presence_penalty": 0.5, "frequency_penalty": -1,
            "logprobs": True, "top_logprobs": 2, "response_format": {"type": "text"}, "logit_bias": None}
    response = api_client(make_user()).post(URL, body, format="json")
    assert response.status_code == 503, response.content
    assert queued[0]["config"] == {"messages": HELLO, "n": 3, "presence_penalty": 0.5, "frequency_penalty": -1.0,
                                   "logprobs": True, "top_logprobs": 2}


def test_json_object_reaches_the_worker_and_json_schema_is_refused_saying_why(base_model, queued):
    body = {"model": "tiny-llama", "messages": HELLO, "response_format": {"type": "json_object"}}
    assert api_client(make_user()).post(URL, body, format="json").status_code == 503
    assert queued[0]["config"] == {"messages": HELLO, "response_format": "json_object"}
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    error = api_client(make_user()).post(URL, body, format="json").json()["error"]
    assert "response_format type 'json_schema' is not supported" in error["message"]


def test_tools_and_a_tool_calling_history_reach_the_worker_and_tool_choice_none_offers_none(base_model, queued):
    row = tool_call_row()
    history = row["messages"][:3]  # the question, the assistant's call (content null), the tool's answer
    client = api_client(make_user())
    assert client.post(URL, {"model": "tiny-llama", "messages": history, "tools": row["tools"],
                             "tool_choice": "auto", "parallel_tool_calls": True}, format="json").status_code == 503
    assert queued[-1]["config"] == {"messages": history, "tools": row["tools"]}
    assert client.post(URL, {"model": "tiny-llama", "messages": history, "tools": row["tools"], "tool_choice": "none",
                             "stream": True}, format="json").status_code == 503
    assert queued[-1]["config"] == {"messages": history}


def test_a_bad_tool_says_what_to_write(base_model, queued):
    body = {"model": "tiny-llama", "messages": HELLO, "tools": [{"type": "function", "function": {"name": ""}}]}
    error = api_client(make_user()).post(URL, body, format="json").json()["error"]
    assert error["param"] == "tools.0.function.name"
    assert error["message"] == "is missing or empty; give each tool a function with a name (and its parameters)"


def test_a_forced_tool_choice_reaches_the_worker(base_model, queued):
    row = tool_call_row()
    client = api_client(make_user())
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in ("required", named):
        assert client.post(URL, {"model": "tiny-llama", "messages": HELLO, "tools": row["tools"],
                                 "tool_choice": choice}, format="json").status_code == 503
        assert queued[-1]["config"] == {"messages": HELLO, "tools": row["tools"], "tool_choice": choice}
