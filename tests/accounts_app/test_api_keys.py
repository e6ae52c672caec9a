"""API keys: hashed at rest, several per user, expiry and revocation, the plain tokens of before
migrated, and every place that reads a key (the API, the websockets, the CLI, the admin)."""

import asyncio
import importlib
import io
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts_app.models import ApiKey
from accounts_app.services import api_key_create
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def assert_openai_error(response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code, body
    return body["error"]


def database_text() -> str:
    """Every row of every table (and every session, decoded) as one string."""
    rows = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows.extend(str(row) for row in cursor.fetchall())
    rows.extend(str(session.get_decoded()) for session in Session.objects.all())
    return "\n".join(rows)


def test_the_database_never_holds_a_key(client):
    user = make_user()
    client.force_login(user)
    page_key = client.post(reverse("accounts:token_create"), {"name": "laptop"}).context["new_key"]
    cli_key = io.StringIO()
    call_command("issue_token", user.username, stdout=cli_key, stderr=io.StringIO())
    cli_key = cli_key.getvalue().strip()
    service_key = api_key_create(user=user, name="svc")[1]
    for key in (page_key, cli_key, service_key):
        assert bearer(key).get("/v1/models").status_code == 200
    stored = database_text()
    for key in (page_key, cli_key, service_key):
        assert key not in stored and key[len("sk-ft-"):] not in stored


def test_bearer_key_authenticates_as_its_user_and_records_last_use(settings):
    user = make_user()
    api_key, key = api_key_create(user=user, name="ci")
    response = bearer(key).get("/v1/fine_tuning/jobs")
    assert response.status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None and timezone.now() - api_key.last_used_at < timedelta(seconds=5)


def test_last_use_is_written_at_most_once_a_minute():
    api_key, key = api_key_create(user=make_user(), name="busy")
    client = bearer(key)
    client.get("/v1/models")
    first = ApiKey.objects.get(pk=api_key.pk).last_used_at
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert client.get("/v1/models").status_code == 200
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "apikey" in q["sql"]]
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(seconds=61))
    client.get("/v1/models")
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > first


def test_unknown_revoked_and_expired_keys_are_401_in_openai_shape():
    user = make_user()
    unknown = assert_openai_error(bearer("sk-ft-" + "x" * 43).get("/v1/models"), 401, "invalid_api_key")
    assert unknown["type"] == "authentication_error" and "Incorrect API key provided: sk-ft-xx****xxxx" in \
        unknown["message"]
    revoked, revoked_key = api_key_create(user=user, name="old")
    revoked.revoked_at = timezone.now()
    revoked.save()
    message = assert_openai_error(bearer(revoked_key).get("/v1/models"), 401, "api_key_revoked")["message"]
    assert f"{revoked.prefix}… was revoked" in message
    expired, expired_key = api_key_create(user=user, name="short", expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert_openai_error(bearer(expired_key).get("/v1/models"), 401, "api_key_expired")
    response = bearer("sk-ft-" + "x" * 43).get("/v1/models")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert_openai_error(APIClient().get("/v1/models"), 401, "not_authenticated")
    assert_openai_error(bearer("two words").get("/v1/models"), 401, "invalid_api_key")


def test_a_deactivated_users_key_is_refused():
    user = make_user()
    _, key = api_key_create(user=user, name="k")
    user.is_active = False
    user.save()
    assert_openai_error(bearer(key).get("/v1/models"), 401, "user_inactive")


def test_an_address_sending_bad_keys_is_slowed_down(settings):
    settings.API_KEY_FAILURES_ALLOWED = 3
    for _ in range(3):
        assert bearer("sk-ft-guess-" + "y" * 30).get("/v1/models").status_code == 401
    locked = bearer("sk-ft-guess-" + "z" * 30).get("/v1/models")
    error = assert_openai_error(locked, 429, "too_many_invalid_keys")
    assert 0 < int(locked["Retry-After"]) <= settings.LOGIN_LOCKOUT_SECONDS + 1
    assert "Too many requests with an invalid API key from your address" in error["message"]


def test_plain_authtoken_keys_of_before_are_migrated_and_keep_working():
    """The data migration on a database that still has DRF's authtoken table."""
    user = make_user()
    old_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
                       "created timestamp with time zone NOT NULL, "
                       "user_id integer NOT NULL UNIQUE REFERENCES auth_user (id))")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [old_key, user.pk])
        cursor.execute("INSERT INTO django_migrations (app, name, applied) VALUES ('authtoken', '0001_initial', now())")
    migration = importlib.import_module("accounts_app.migrations.0002_authtoken_to_api_keys")
    state = MigrationExecutor(connection).loader.project_state(("accounts_app", "0002_authtoken_to_api_keys"))
    with connection.schema_editor() as editor:
        migration.tokens_to_api_keys(state.apps, editor)

    assert "authtoken_token" not in connection.introspection.table_names()
    assert not MigrationRecorder.Migration.objects.filter(app="authtoken").exists()
    migrated = ApiKey.objects.get(user=user)
    assert migrated.name == "Token from before API keys" and migrated.prefix == old_key[:8]
    assert old_key not in database_text()
    assert bearer(old_key).get("/v1/models").status_code == 200


def test_issue_token_prints_a_new_key_and_revokes_its_earlier_one_only(client):
    out = io.StringIO()
    call_command("issue_token", "dora", stdout=out, stderr=io.StringIO())
    first = out.getvalue().strip()
    user = ApiKey.objects.get().user
    _, page_key = api_key_create(user=user, name="laptop")
    out = io.StringIO()
    call_command("issue_token", "dora", stdout=out)
    second = out.getvalue().strip()
    assert second.startswith("sk-ft-") and second != first
    assert bearer(first).get("/v1/models").status_code == 401
    assert bearer(second).get("/v1/models").status_code == 200
    assert bearer(page_key).get("/v1/models").status_code == 200


def test_admin_lists_keys_by_prefix_and_can_revoke_them(client):
    owner = make_user("erin")
    api_key, key = api_key_create(user=owner, name="deploy")
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    listing = client.get("/admin/accounts_app/apikey/").content.decode()
    assert f"{api_key.prefix}…" in listing and "deploy" in listing and "erin" in listing
    assert key not in listing and api_key.key_hash not in listing
    change = client.get(f"/admin/accounts_app/apikey/{api_key.pk}/change/").content.decode()
    assert key not in change and api_key.key_hash not in change
    assert client.get("/admin/accounts_app/apikey/add/").status_code == 403
    client.post("/admin/accounts_app/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})
    assert bearer(key).get("/v1/models").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_websocket_client_may_log_in_with_its_key(live_base_model):
    from channels.testing import WebsocketCommunicator

    from finetune_site.asgi import application
    from tests.jobs_app.test_consumers import HOST, ORIGIN

    _, key = api_key_create(user=make_user(), name="ws")

    async def scenario():
        good = WebsocketCommunicator(application, "/ws/dashboard/",
                                     headers=[HOST, ORIGIN, (b"authorization", f"Bearer {key}".encode())])
        assert (await good.connect())[0]
        assert 'id="active-jobs"' in await good.receive_from()
        await good.disconnect()
        bad = WebsocketCommunicator(application, "/ws/dashboard/",
                                    headers=[HOST, ORIGIN, (b"authorization", b"Bearer sk-ft-nope")])
        assert not (await bad.connect())[0]
        await bad.disconnect()  # waits for the refused consumer to end: no task outlives the test

    asyncio.run(scenario())
