"""Login, logout and the API-token page."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import make_user

pytestmark = pytest.mark.django_db


def test_pages_redirect_anonymous_users_to_login(client):
    for url in ["/", reverse("jobs:list"), reverse("datasets:list"), reverse("models:list"),
                reverse("accounts:tokens"), reverse("jobs:wizard_dataset")]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url


def test_login_with_password_lands_on_dashboard(client):
    make_user("alice")
    page = client.get(reverse("accounts:login"))
    assert b'<label for="id_username">' in page.content
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert b"Dashboard" in client.get("/").content


def test_login_error_is_shown(client):
    make_user("alice")
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200 and b'role="alert"' in response.content


def test_logout_needs_post_and_ends_the_session(client):
    client.force_login(make_user())
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_token_create_shows_the_key_once_and_replaces_the_old_one(client):
    user = make_user()
    client.force_login(user)
    old = Token.objects.create(user=user)
    response = client.post(reverse("accounts:token_create"), follow=True)
    new = Token.objects.get(user=user)
    assert new.key != old.key and new.key.encode() in response.content
    assert b"creating a new one replaces" in response.content
    assert new.key.encode() not in client.get(reverse("accounts:tokens")).content  # shown once


def test_token_revoke_deletes_it(client):
    user = make_user()
    Token.objects.create(user=user)
    client.force_login(user)
    client.post(reverse("accounts:token_revoke"))
    assert not Token.objects.filter(user=user).exists()
    assert b"No token yet" in client.get(reverse("accounts:tokens")).content


def test_token_actions_refuse_get(client):
    client.force_login(make_user())
    assert client.get(reverse("accounts:token_create")).status_code == 405
