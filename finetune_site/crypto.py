"""Secrets kept in the database (a provider's API key), encrypted with Fernet (AES-128-CBC + HMAC).

The key is ``PROVIDER_KEY`` (a Fernet key: 32 url-safe base64 bytes) or, unset, derived from
``SECRET_KEY``: rotating SECRET_KEY then makes stored provider keys unreadable (enter them again).
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    key = settings.PROVIDER_KEY or base64.urlsafe_b64encode(
        hashlib.sha256(("finetune-provider-key:" + settings.SECRET_KEY).encode()).digest()).decode()
    return Fernet(key)


def secret_encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def secret_decrypt(token: str) -> str:
    """The plain secret; ValueError when the key it was sealed with is not this one."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("the stored key cannot be decrypted with PROVIDER_KEY / SECRET_KEY: enter it again") from None
