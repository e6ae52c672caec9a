"""Helpers for API tests through DRF's test client with a Bearer API key."""

import redis
from django.conf import settings
from rest_framework.test import APIClient

from accounts_app.services import api_key_create


def api_key_for(user, name: str = "test") -> str:
    """A new API key of ``user`` (the key itself; the database keeps only its hash)."""
    return api_key_create(user=user, name=name)[1]


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + api_key_for(user))
    return client


def lockouts_forget() -> None:
    """Forget failed logins and bad keys: every test client comes from 127.0.0.1, so one test's
    failures must not lock out the next."""
    server = redis.Redis.from_url(settings.REDIS_URL)
    for key in server.scan_iter(match="*strikes:*"):
        server.delete(key)
