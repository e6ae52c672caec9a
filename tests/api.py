"""Helpers for API tests through DRF's test client with a Bearer token."""

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + Token.objects.create(user=user).key)
    return client
