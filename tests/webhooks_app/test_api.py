"""The webhooks API: create (a whsec_ secret), list, retrieve, delete, deliveries and a test send;
bad input is a 400 naming its param, and nothing is stored."""

import base64

import pytest

from jobs_app.services import job_cancel
from tests.api import api_client
from tests.e2e import free_port
from tests.factories import make_job, make_user
from webhooks_app.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db
JOB_ENDS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]


def _create(client, url: str, events=None):
    return client.post("/v1/webhooks", {"url": url, "events": JOB_ENDS if events is None else events},
                       format="json")


def test_create_returns_id_and_standard_webhooks_secret(private_allowed, receiver):
    user = make_user()
    response = _create(api_client(user), receiver.url)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"].startswith("whep-") and body["url"] == receiver.url and body["events"] == JOB_ENDS
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][len("whsec_"):])) == 24
    assert WebhookEndpoint.objects.get(pk=body["id"]).owner == user


def test_list_and_retrieve_show_own_endpoints_without_secret(private_allowed, receiver):
    user = make_user()
    client = api_client(user)
    mine = _create(client, receiver.url).json()
    _create(api_client(make_user()), receiver.url)
    listed = client.get("/v1/webhooks").json()
    assert [e["id"] for e in listed["data"]] == [mine["id"]]
    assert "secret" not in listed["data"][0]
    got = client.get(f"/v1/webhooks/{mine['id']}").json()
    assert got["id"] == mine["id"] and "secret" not in got


def test_delete_removes_endpoint_and_another_users_is_404(private_allowed, receiver):
    user = make_user()
    client = api_client(user)
    endpoint = _create(client, receiver.url).json()
    assert api_client(make_user()).delete(f"/v1/webhooks/{endpoint['id']}").status_code == 404
    response = client.delete(f"/v1/webhooks/{endpoint['id']}")
    assert response.status_code == 200 and response.json()["deleted"] is True
    assert not WebhookEndpoint.objects.exists()
    assert client.get(f"/v1/webhooks/{endpoint['id']}").status_code == 404


def test_deliveries_list_the_endpoints_events(private_allowed, receiver, base_model):
    user = make_user()
    client = api_client(user)
    endpoint = _create(client, receiver.url, ["fine_tuning.job.cancelled"]).json()
    job = make_job(user, status="queued")
    job_cancel(job=job)
    deliveries = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert delivery["event_type"] == "fine_tuning.job.cancelled" and delivery["status"] == "pending"
    assert delivery["payload"]["data"]["id"] == job.id and delivery["payload"]["id"] == delivery["event_id"]
    assert api_client(make_user()).get(f"/v1/webhooks/{endpoint['id']}/deliveries").status_code == 404
    bad_cursor = client.get(f"/v1/webhooks/{endpoint['id']}/deliveries?after=abc")
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "after"


def test_send_test_queues_a_test_delivery(private_allowed, receiver):
    client = api_client(make_user())
    endpoint = _create(client, receiver.url).json()
    response = client.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert response.status_code == 200
    assert response.json()["event_type"] == "webhook.test"
    assert WebhookDelivery.objects.get().endpoint_id == endpoint["id"]


@pytest.mark.parametrize(("url", "events", "param", "text"), [
    ("", None, "url", "may not be blank"),
    ("not a url", None, "url", "not an http:// or https:// URL"),
    ("ftp://example.com/hook", None, "url", "not an http:// or https:// URL"),
    ("http://user:pw@example.com/hook", None, "url", "user name or password"),
    ("http://no-such-host.invalid/hook", None, "url", "does not resolve"),
    ("RECEIVER", ["fine_tuning.job.exploded"], "events", "unknown event type 'fine_tuning.job.exploded'"),
    ("RECEIVER", [], "events", "may not be empty"),
    ("RECEIVER", "fine_tuning.job.failed", "events", "list"),
])
def test_bad_input_is_400_with_param_and_stores_nothing(private_allowed, receiver, url, events, param, text):
    response = _create(api_client(make_user()), receiver.url if url == "RECEIVER" else url, events)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and text in error["message"], error
    assert not WebhookEndpoint.objects.exists()


def test_unreachable_url_is_400(private_allowed):
    response = _create(api_client(make_user()), f"http://127.0.0.1:{free_port()}/hook")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "url" and error["code"] == "url_unreachable" and "unreachable" in error["message"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "http://localhost:{port}/hook",
                                 "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]:{port}/hook", "http://192.168.0.10/hook"])
def test_private_address_is_400_unless_the_operator_allows_it(settings, receiver, url):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    port = receiver.url.rsplit(":", 1)[1].split("/")[0]
    response = _create(api_client(make_user()), url.format(port=port))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "url" and "WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1" in error["message"], error
    assert not WebhookEndpoint.objects.exists()
