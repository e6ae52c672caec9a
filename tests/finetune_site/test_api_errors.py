"""Under /v1 every answer that is not a success has OpenAI's error shape, unknown routes included;
per-key rate limits answer 429 with Retry-After; the schema documents the errors."""

import json

import pytest
from django.test import RequestFactory
from rest_framework.test import APIClient

from accounts_app.services import api_key_create
from finetune_site import views
from tests.api import api_client
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def openai_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_api_routes_are_json_404s(client):
    for method, path in [("get", "/v1/nope"), ("post", "/v1/nope"), ("get", "/v1"), ("get", "/v1/files/"),
                         ("delete", "/v1/fine_tuning/jobs/x/y/z")]:
        error = openai_error(getattr(client, method)(path), 404)
        assert error["code"] == "unknown_url" and path in error["message"], path
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_wrong_method_is_a_json_405_whatever_the_client_accepts():
    client = api_client(make_user())
    for accept in ("application/json", "text/html", "*/*"):
        response = client.put("/v1/models", HTTP_ACCEPT=accept)
        error = openai_error(response, 405)
        assert error["code"] == "method_not_allowed" and response["Allow"] == "GET, HEAD, OPTIONS"
    assert openai_error(APIClient().get("/v1/models", HTTP_ACCEPT="text/html"), 401)["type"] == \
        "authentication_error"


def test_server_errors_under_v1_are_json():
    response = views.server_error(RequestFactory().get("/v1/models"))
    assert response.status_code == 500 and json.loads(response.content)["error"]["type"] == "server_error"
    assert views.server_error(RequestFactory().get("/")).status_code == 500


def test_each_key_gets_api_rate_limit_requests_then_429_with_retry_after(settings):
    settings.API_RATE_LIMIT = "3/day"  # a day-long window: the test cannot straddle two
    user = make_user()
    first, second = APIClient(), APIClient()
    first.credentials(HTTP_AUTHORIZATION="Bearer " + api_key_create(user=user, name="a")[1])
    second.credentials(HTTP_AUTHORIZATION="Bearer " + api_key_create(user=user, name="b")[1])
    for _ in range(3):
        assert first.get("/v1/models").status_code == 200
    limited = first.get("/v1/models")
    error = openai_error(limited, 429)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "3/day requests per API key" in error["message"]
    assert 0 < int(limited["Retry-After"]) <= 86400 and f"Try again in {limited['Retry-After']} s" in error["message"]
    assert second.get("/v1/models").status_code == 200  # the limit is per key
    settings.API_RATE_LIMIT = ""
    assert first.get("/v1/models").status_code == 200  # empty: no limit


def test_the_pages_own_api_calls_are_limited_per_user(client, settings):
    settings.API_RATE_LIMIT = "2/day"
    client.force_login(make_user())
    assert [client.get("/v1/models").status_code for _ in range(3)] == [200, 200, 429]


def test_schema_documents_errors_and_has_unique_operation_ids(client):
    schema = client.get("/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["ApiKey"][
            "description"]}
    ids = [operation["operationId"] for item in schema["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))
    assert {"files_list", "files_retrieve", "fine_tuning_jobs_list", "models_list"} <= set(ids)
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"401", "429"} <= set(responses), (method, path)
            assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= set(responses), (method, path)
            assert responses["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


def test_a_json_body_over_the_memory_limit_is_a_413_naming_the_limit_and_stores_nothing(settings):
    from jobs_app.models import FineTuneJob

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"model": "tiny-llama", "training_file": "file-abc", "metadata": {"a": "x" * 2000}})
    for path in ("/v1/fine_tuning/jobs", "/v1/chat/completions"):
        error = openai_error(api_client(make_user()).post(path, body, content_type="application/json"), 413)
        assert error["code"] == "request_too_large" and "DATA_UPLOAD_MAX_MEMORY_SIZE" in error["message"]
    assert not FineTuneJob.objects.exists()
