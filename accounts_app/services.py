"""Writes for a user's account: the API token (DRF's authtoken keeps one per user)."""

from django.db import transaction
from rest_framework.authtoken.models import Token


def token_create(*, user) -> Token:
    """Create the user's API token, replacing (and so revoking) the one they had."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)


def token_revoke(*, user) -> None:
    """Delete the user's API token; API calls with it fail from now on."""
    Token.objects.filter(user=user).delete()
