"""Each DRF authtoken key becomes a hashed API key of the same user, then the plain keys are dropped.

Clients keep working with the key they have: it hashes to the stored hash. The authtoken table is
read with SQL because the app is no longer installed; a database that never had it is left alone.
"""

import hashlib
from datetime import datetime, timezone

from django.db import migrations
from django.utils.dateparse import parse_datetime

NAME = "Token from before API keys"


def _aware(value) -> datetime:
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is None:
        return datetime.now(timezone.utc)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def tokens_to_api_keys(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    ApiKey = apps.get_model("accounts_app", "ApiKey")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        ApiKey.objects.get_or_create(
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            defaults={"user_id": user_id, "name": NAME, "prefix": key[:8], "created_at": _aware(created)},
        )
    # The plain keys must not outlive their copies; forgetting the app's migrations lets it be
    # installed again later from scratch.
    schema_editor.execute(schema_editor.sql_delete_table % {"table": schema_editor.quote_name("authtoken_token")})
    schema_editor.execute("DELETE FROM django_migrations WHERE app = %s", ["authtoken"])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts_app", "0001_initial"),
    ]

    # Irreversible in substance: hashes cannot give the plain keys back.
    operations = [migrations.RunPython(tokens_to_api_keys, migrations.RunPython.noop)]
