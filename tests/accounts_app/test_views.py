"""Login (with its lockout), logout and the API keys page."""

import pytest
from django.urls import reverse

from accounts_app.models import ApiKey
from accounts_app.services import api_key_create, api_key_hash
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


def test_login_is_locked_after_repeated_failures_even_with_the_right_password(client, settings):
    settings.LOGIN_FAILURES_ALLOWED = 3
    settings.LOGIN_LOCKOUT_SECONDS = 600
    make_user("mallory-target")
    for _ in range(2):
        wrong = client.post(reverse("accounts:login"), {"username": "mallory-target", "password": "guess"})
        assert wrong.status_code == 200 and b"Please enter a correct username and password" in wrong.content
    third = client.post(reverse("accounts:login"), {"username": "mallory-target", "password": "guess"})
    assert third.status_code == 429 and int(third["Retry-After"]) > 590
    assert b"Too many failed logins for this username from your address" in third.content
    assert b"blocked for 10 minutes" in third.content
    right = client.post(reverse("accounts:login"), {"username": "MALLORY-target", "password": "pw-mallory-target"})
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    # another username from the same address is not locked
    make_user("bob")
    assert client.post(reverse("accounts:login"), {"username": "bob", "password": "pw-bob"}).status_code == 302


def test_a_successful_login_forgets_earlier_failures(client, settings):
    settings.LOGIN_FAILURES_ALLOWED = 3
    make_user("carol")
    for _ in range(2):
        client.post(reverse("accounts:login"), {"username": "carol", "password": "nope"})
    assert client.post(reverse("accounts:login"), {"username": "carol", "password": "pw-carol"}).status_code == 302
    client.post(reverse("accounts:logout"))
    for _ in range(2):
        client.post(reverse("accounts:login"), {"username": "carol", "password": "nope"})
    assert client.post(reverse("accounts:login"), {"username": "carol", "password": "pw-carol"}).status_code == 302


def test_admin_login_has_the_same_lockout(client, settings):
    settings.LOGIN_FAILURES_ALLOWED = 2
    make_user("root", is_staff=True, is_superuser=True)
    for _ in range(2):
        client.post("/admin/login/", {"username": "root", "password": "x"})
    locked = client.post("/admin/login/", {"username": "root", "password": "pw-root"})
    assert b"Too many failed logins" in locked.content and "_auth_user_id" not in client.session


def test_logout_needs_post_and_ends_the_session(client):
    client.force_login(make_user())
    assert client.post(reverse("accounts:logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_key_create_shows_the_key_once_and_stores_only_its_hash(client):
    user = make_user()
    client.force_login(user)
    response = client.post(reverse("accounts:token_create"), {"name": "laptop", "expires_in_days": ""})
    assert response.status_code == 201 and response["Cache-Control"].startswith("max-age=0")
    key = response.context["new_key"]
    assert key.startswith("sk-ft-") and len(key) > 40 and key.encode() in response.content
    stored = ApiKey.objects.get(user=user)
    assert stored.name == "laptop" and stored.key_hash == api_key_hash(key) and key.startswith(stored.prefix)
    assert stored.expires_at is None and stored.last_used_at is None
    page = client.get(reverse("accounts:tokens")).content.decode()
    assert key not in page  # shown once
    assert f"<code>{stored.prefix}…</code>" in page and "laptop" in page and "never" in page


def test_several_named_keys_with_expiry_and_revoking_one_keeps_the_others(client):
    user = make_user()
    client.force_login(user)
    client.post(reverse("accounts:token_create"), {"name": "ci", "expires_in_days": "30"})
    client.post(reverse("accounts:token_create"), {"name": "laptop", "expires_in_days": ""})
    ci, laptop = ApiKey.objects.get(name="ci"), ApiKey.objects.get(name="laptop")
    assert 29 < (ci.expires_at - ci.created_at).days + 1 <= 30
    assert client.post(reverse("accounts:token_revoke", args=[ci.pk])).status_code == 302
    ci.refresh_from_db()
    laptop.refresh_from_db()
    assert ci.status == "revoked" and laptop.status == "active"
    page = client.get(reverse("accounts:tokens")).content.decode()
    assert "Revoked" in page and "Active" in page


def test_key_create_refuses_a_missing_name_or_a_made_up_expiry(client):
    user = make_user()
    client.force_login(user)
    nameless = client.post(reverse("accounts:token_create"), {"name": "  ", "expires_in_days": ""})
    assert nameless.status_code == 400 and b"This field is required" in nameless.content
    odd = client.post(reverse("accounts:token_create"), {"name": "x", "expires_in_days": "12"})
    assert odd.status_code == 400 and b"Select a valid choice" in odd.content
    assert not ApiKey.objects.filter(user=user).exists()


def test_another_users_key_cannot_be_revoked(client):
    theirs, _ = api_key_create(user=make_user(), name="theirs")
    client.force_login(make_user())
    assert client.post(reverse("accounts:token_revoke", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_key_actions_refuse_get(client):
    client.force_login(make_user())
    assert client.get(reverse("accounts:token_create")).status_code == 405
