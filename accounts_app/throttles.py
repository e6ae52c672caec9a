"""Per-key rate limits for /v1: ``API_RATE_LIMIT`` requests per API key (per user for session calls)."""

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

from accounts_app.models import ApiKey
from finetune_site.env import rate_parse


class ApiKeyRateThrottle(BaseThrottle):
    """A fixed window per key: one atomic INCR per request, whatever the limit (DRF's own throttle
    rewrites the list of every request's time in the window)."""

    def allow_request(self, request, view) -> bool:
        self.retry_after = None
        # Read per request, not at import: the setting may change (tests set it low).
        if not settings.API_RATE_LIMIT:
            return True
        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return True  # anonymous calls are refused (401) before they cost anything
        limit, seconds = rate_parse(settings.API_RATE_LIMIT)
        now = time.time()
        window = int(now // seconds)
        key = f"throttle:api:{ident}:{window}"
        cache.add(key, 0, seconds + 1)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr: a new window
            cache.set(key, 1, seconds + 1)
            count = 1
        if count <= limit:
            return True
        self.retry_after = max(1, int((window + 1) * seconds - now + 0.999))
        return False

    def wait(self) -> float | None:
        return self.retry_after
