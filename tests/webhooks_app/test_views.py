"""The webhooks page: list, create (the secret shown once), delete, the delivery log, 'send test' and
the notification preferences."""

import pytest
from django.urls import reverse

from jobs_app.services import job_cancel
from tests.e2e import free_port
from tests.factories import make_job, make_user
from webhooks_app.models import NotificationPreference, WebhookDelivery, WebhookEndpoint
from webhooks_app.services import webhook_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(client):
    user = make_user(email="grace@example.com")
    client.force_login(user)
    return user


def test_nav_links_the_webhooks_page_which_lists_only_own_endpoints(client, user, private_allowed, receiver):
    mine = webhook_create(owner=user, url=receiver.url, events=["dataset.ready"])
    theirs = webhook_create(owner=make_user(), url=receiver.url + "/theirs", events=["dataset.ready"])
    page = client.get(reverse("webhooks:list")).content.decode()
    assert f'href="{reverse("webhooks:list")}"' in client.get(reverse("home")).content.decode()
    assert mine.id in page and theirs.id not in page and mine.secret not in page


def test_create_shows_the_secret_once(client, user, private_allowed, receiver):
    response = client.post(reverse("webhooks:create"), {"url": receiver.url,
                                                        "events": ["fine_tuning.job.failed", "dataset.invalid"]})
    assert response.status_code == 201
    endpoint = WebhookEndpoint.objects.get(owner=user)
    assert endpoint.events == ["fine_tuning.job.failed", "dataset.invalid"]
    assert endpoint.secret in response.content.decode() and "no-store" in response["Cache-Control"]
    assert endpoint.secret not in client.get(reverse("webhooks:list")).content.decode()


@pytest.mark.parametrize(("url", "text"), [("http://10.0.0.7/hook", "WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1"),
                                           ("http://127.0.0.1:{port}/hook", "unreachable")])
def test_create_with_a_bad_url_says_why_and_stores_nothing(client, user, settings, url, text):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = "unreachable" in text
    response = client.post(reverse("webhooks:create"), {"url": url.format(port=free_port()),
                                                        "events": ["dataset.ready"]})
    assert response.status_code == 400 and text in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_detail_shows_the_delivery_log_and_its_partial_for_htmx(client, user, private_allowed, receiver, base_model):
    job = make_job(user, status="queued")
    endpoint = webhook_create(owner=user, url=receiver.url, events=["fine_tuning.job.cancelled"])
    job_cancel(job=job)
    delivery = WebhookDelivery.objects.get()
    page = client.get(reverse("webhooks:detail", args=[endpoint.id])).content.decode()
    assert delivery.event_id in page and "fine_tuning.job.cancelled" in page and 'id="send-test"' in page
    partial = client.get(reverse("webhooks:detail", args=[endpoint.id]), headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<table class="deliveries">')
    other = make_user()
    client.force_login(other)
    assert client.get(reverse("webhooks:detail", args=[endpoint.id])).status_code == 404


def test_send_test_button_queues_a_test_delivery(client, user, private_allowed, receiver):
    endpoint = webhook_create(owner=user, url=receiver.url, events=["dataset.ready"])
    response = client.post(reverse("webhooks:test", args=[endpoint.id]), follow=True)
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "webhook.test" and delivery.event_id in response.content.decode()


def test_delete_removes_the_endpoint(client, user, private_allowed, receiver):
    endpoint = webhook_create(owner=user, url=receiver.url, events=["dataset.ready"])
    client.post(reverse("webhooks:delete", args=[endpoint.id]))
    assert not WebhookEndpoint.objects.exists()


def test_notification_preferences_are_saved_and_a_private_slack_url_is_refused(client, user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False
    refused = client.post(reverse("webhooks:notifications"),
                          {"email": "on", "slack_url": "http://192.168.1.2/hook", "events": ["dataset.ready"]})
    assert refused.status_code == 400 and "WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1" in refused.content.decode()
    assert not NotificationPreference.objects.exists()
    client.post(reverse("webhooks:notifications"), {"email": "on", "events": ["fine_tuning.job.failed"]})
    preference = NotificationPreference.objects.get(user=user)
    assert preference.email and preference.slack_url == "" and preference.events == ["fine_tuning.job.failed"]
