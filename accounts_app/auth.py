"""API keys as the openai client sends them: ``Authorization: Bearer sk-ft-…``."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts_app import services
from accounts_app.selectors import user_acting
from accounts_app.services import ApiKeyRefused

INVALID_KEYS = "api-key"  # lockout scope: requests with a bad key, per client address


def bearer_key(authorization: bytes) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header; None for another scheme or none at all."""
    parts = authorization.split()
    if not parts or parts[0].lower() != b"bearer":
        return None
    if len(parts) != 2:
        raise ApiKeyRefused("Malformed Authorization header: send 'Authorization: Bearer YOUR_KEY'.")
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise ApiKeyRefused("Malformed Authorization header: the key has characters no key has.") from None


def api_key_user(authorization: bytes, address: str):
    """The user and key an Authorization header names (None, None without a Bearer header).

    Raises ``ApiKeyRefused`` for a bad key, and ``exceptions.Throttled`` once an address has sent
    ``API_KEY_FAILURES_ALLOWED`` bad keys within ``LOGIN_LOCKOUT_SECONDS``.
    """
    raw_key = bearer_key(authorization)
    if raw_key is None:
        return None, None
    wait = services.strikes_lockout(scope=INVALID_KEYS, subject=address)
    if wait:
        raise exceptions.Throttled(wait, detail="Too many requests with an invalid API key from your address.",
                                   code="too_many_invalid_keys")
    try:
        api_key = services.api_key_authenticate(raw_key=raw_key)
    except ApiKeyRefused:
        services.strike_record(scope=INVALID_KEYS, subject=address, allowed=settings.API_KEY_FAILURES_ALLOWED)
        raise
    return api_key.user, api_key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        try:
            user, api_key = api_key_user(get_authorization_header(request), request.META.get("REMOTE_ADDR", ""))
        except ApiKeyRefused as refused:
            raise exceptions.AuthenticationFailed(str(refused), code=refused.code) from None
        if user is None:
            return None
        return user_acting(user, api_key.project_id), api_key  # a key acts in its own project only

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'  # a 401, not a 403, for a missing or bad key


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key (sk-ft-…) from the API keys page "
                "or `manage.py issue_token`."}
