"""The hostile inputs of issue 11, kept as tests so they never come back: NUL characters, JSON nested
too deep, names too long, text that is not UTF-8, unknown websocket paths, and live updates across a
Redis flush. Each answers 400/404/409 in OpenAI's error shape under /v1 (never a 5xx) and stores nothing.
Run on PostgreSQL, which refuses NUL in text and jsonb; SQLite would hide half of them."""

import json
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from datasets_app.models import Dataset, DatasetUpload
from jobs_app.models import FineTuneJob
from tests.api import api_client
from tests.factories import make_dataset, make_job, make_user

pytestmark = pytest.mark.django_db
NUL = "\x00"


def openai_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def every_route() -> list[str]:
    """Every URL pattern of the site but the admin's, with each of its parameters filled by ``a\\0``."""
    routes = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver) and "admin" not in str(pattern.pattern):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                routes.append("/" + prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns, "")
    return routes


# --- NUL -----------------------------------------------------------------------------------------

def test_a_nul_in_any_path_or_query_is_a_400_never_a_500(client, base_model):
    user = make_user()
    make_job(user)
    client.force_login(user)
    api = api_client(user)
    routes = every_route()
    assert len(routes) > 60 and "/v1/files/<str:file_id>" in routes
    for route in routes:
        with_nul = re.sub(r"<[^>]+>", "a" + NUL, route)
        plain = re.sub(r"<[^>]+>", "a", route)
        web = api if route.startswith("/v1") else client
        for method in ("get", "post", "delete"):
            if "<" in route:
                check_refused(getattr(web, method)(with_nul), with_nul, "path")
            check_refused(getattr(web, method)(plain + "?after=a%00&limit=%00"), plain, "query")


def check_refused(response, path: str, part: str) -> None:
    if path.startswith("/v1"):
        error = openai_error(response, 400)
        assert error["code"] == "bad_request" and f"The request's {part} contains a NUL" in error["message"], path
    else:
        assert response.status_code == 400, (path, response.status_code)


def test_a_nul_in_a_cookie_or_a_page_form_is_a_400(client):
    user = make_user()
    client.force_login(user)
    assert client.post("/jobs/new/model/", {"suffix": "x" + NUL}).status_code == 400
    # a quoted cookie's octal escapes are NULs once parsed: a session key that would reach the database
    assert client.get("/datasets/", HTTP_COOKIE='sessionid="' + "\\000" * 40 + '"').status_code == 400


@pytest.mark.parametrize("path, body, param", [
    ("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": "{dataset}", "method": {
        "type": "supervised", "supervised": {"hyperparameters": {"lora_target_modules": ["q_proj" + NUL]}}}},
     "lora_target_modules"),
    ("/v1/fine_tuning/jobs", {"model": "tiny-llama", "training_file": "{dataset}",
                              "metadata": {"note" + NUL: "x"}}, "metadata"),
    ("/v1/datasets/{dataset}/validate", {"column_map": {"question": "prompt" + NUL}}, "column_map"),
    ("/v1/datasets/{dataset}/prepare", {"operations": [{"op": "filter_length", "max_tokens": 10,
                                                        "model": "tiny-llama" + NUL}]}, "model"),
    ("/v1/datasets/uploads", {"filename": "train.jsonl", "column_map": {"q": "prompt" + NUL}}, "column_map"),
])
def test_a_nul_inside_a_json_body_is_a_400_and_nothing_is_stored(base_model, path, body, param):
    user = make_user()
    dataset = make_dataset(user)
    before = (FineTuneJob.objects.count(), Dataset.objects.count(), DatasetUpload.objects.count())
    text = json.dumps(body).replace("{dataset}", dataset.id)
    response = api_client(user).post(path.replace("{dataset}", dataset.id), text, content_type="application/json")
    error = openai_error(response, 400)
    assert error["code"] == "parse_error" and "NUL character (\\u0000)" in error["message"], param
    assert (FineTuneJob.objects.count(), Dataset.objects.count(), DatasetUpload.objects.count()) == before
    dataset.refresh_from_db()
    assert dataset.options == {}


# --- depth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100_000, 3_000, 65])
def test_json_nested_too_deep_is_a_400(base_model, depth):
    user = make_user()
    dataset = make_dataset(user)
    deep = "[" * depth + "]" * depth
    hyperparameters = '{"lora_target_modules": ' + deep + "}"
    body = (f'{{"model": "tiny-llama", "training_file": "{dataset.id}", "method": {{"type": "supervised", '
            f'"supervised": {{"hyperparameters": {hyperparameters}}}}}}}')
    error = openai_error(api_client(user).post("/v1/fine_tuning/jobs", body, content_type="application/json"), 400)
    assert error["code"] == "parse_error" and "nested more than 64 levels deep" in error["message"]
    assert not FineTuneJob.objects.exists()


def test_a_method_3000_deep_is_a_400(base_model):
    user = make_user()
    dataset = make_dataset(user)
    method = '{"type": "supervised", "supervised": ' * 3000 + "{}" + "}" * 3000
    body = f'{{"model": "tiny-llama", "training_file": "{dataset.id}", "method": {method}}}'
    error = openai_error(api_client(user).post("/v1/fine_tuning/jobs", body, content_type="application/json"), 400)
    assert "nested more than 64 levels deep" in error["message"]
    assert not FineTuneJob.objects.exists()
