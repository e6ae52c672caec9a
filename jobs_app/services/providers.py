"""Providers: remote OpenAI-compatible fine-tuning APIs a job can run on, with their keys sealed."""

from urllib.parse import urlparse

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from finetune_site.crypto import secret_decrypt, secret_encrypt
from finetune_site.errors import Conflict, InvalidRequest
from jobs_app.models import Provider

LOCAL = "local"  # this platform's own workers: a name no provider may take


def provider_create(*, owner, name: str, base_url: str, api_key: str, kind: str = Provider.Kind.OPENAI,
                    shared: bool = False) -> Provider:
    """Store a provider with its key sealed. ``shared`` (staff only) makes it the operator's, for every
    user. A 400 names the field that is wrong; nothing is stored then."""
    if not isinstance(name, str) or not name or len(name) > 64 or not all(
            c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        raise InvalidRequest("name must be 1 to 64 letters, digits, -, _ or .", param="name")
    if name == LOCAL:
        raise InvalidRequest(f"{LOCAL!r} names this platform's own workers; choose another name", param="name")
    if kind not in Provider.Kind.values:
        raise InvalidRequest(f"kind must be one of {', '.join(Provider.Kind.values)}", param="kind")
    url = urlparse(base_url or "")
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidRequest("base_url must be an http(s) URL, e.g. https://api.openai.com/v1", param="base_url")
    if not isinstance(api_key, str) or not api_key.strip():
        raise InvalidRequest("api_key is required", param="api_key")
    if shared and not getattr(owner, "is_staff", False):
        raise InvalidRequest("only staff can add a provider shared with every user", param="shared")
    try:
        with transaction.atomic():
            return Provider.objects.create(owner=None if shared else owner, name=name, kind=kind,
                                           base_url=base_url.rstrip("/"), api_key_sealed=secret_encrypt(api_key),
                                           api_key_hint=api_key.strip()[-4:])
    except IntegrityError:
        raise InvalidRequest(f"a provider named {name!r} exists already", param="name",
                             code="provider_exists") from None


def provider_delete(*, provider: Provider, by) -> None:
    """Delete a provider ``by`` owns (staff: a shared one); one that jobs ran on stays (409)."""
    if provider.owner_id is None and not by.is_staff or provider.owner_id not in (None, by.id):
        raise Conflict("only staff can delete a shared provider", code="forbidden")
    try:
        provider.delete()
    except ProtectedError:
        raise Conflict(f"provider {provider.name!r} has jobs; it stays while they do",
                       code="provider_in_use") from None


def provider_api_key(provider: Provider) -> str:
    """The provider's key, unsealed (only the task that calls the provider reads it)."""
    return secret_decrypt(provider.api_key_sealed)
