"""The ASGI layer in front of Django and Channels: what is refused before any view runs.

HTTP: a request body is refused (413, or 401 under /v1 for want of a key) before it is read when
its Content-Length is over ``MAX_UPLOAD_BYTES`` (plus a small allowance for the multipart
envelope), or over ``MAX_ANONYMOUS_BODY_BYTES`` without a valid session or API key; a chunked body
is counted as it arrives and cut off at the same limits. What is accepted is spooled by Django to
a temporary file in ``FILE_UPLOAD_TEMP_DIR`` once past ``FILE_UPLOAD_MAX_MEMORY_SIZE``, so the
server's memory does not grow with the body (the server, uvicorn, stops reading the socket while
the application is not reading the body).

Websockets: a handshake with a NUL character in its path, query or cookies is refused (the
database cannot look one up); the Origin must be this site itself (scheme, host and port, as the browser addressed
it) or one of ``CSRF_TRUSTED_ORIGINS``; a client that sends an API key as a Bearer header is
logged in by it when it has no session.
"""

import json
import tempfile
from importlib import import_module
from urllib.parse import unquote_to_bytes, urlsplit

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib import auth
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, parse_cookie
from django.http.request import is_same_domain, split_domain_port, validate_host
from rest_framework.exceptions import Throttled

from accounts_app.auth import api_key_user
from accounts_app.middleware import SESSION_KEY as PROJECT_SESSION_KEY
from accounts_app.selectors import user_acting
from accounts_app.services import ApiKeyRefused
from finetune_site.api_errors import error_body, is_api_path
from finetune_site.nul_guard import NUL, has_nul

# Room for the multipart boundaries, part headers and small form fields around an uploaded file of
# MAX_UPLOAD_BYTES; the upload service checks the file's own size exactly.
ENVELOPE_BYTES = 2**20
DEFAULT_PORTS = {"http": 80, "https": 443}


class SpoolingASGIHandler(ASGIHandler):
    """Django's handler, spooling request bodies into ``FILE_UPLOAD_TEMP_DIR`` rather than the system's
    temporary directory (Django's own uses ``tempfile``'s default), so large bodies land on the volume
    meant for them."""

    async def read_body(self, receive):
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b",
                                                  dir=settings.FILE_UPLOAD_TEMP_DIR)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            if "body" in message:
                body_file.write(message["body"])
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file

    def create_request(self, scope, body_file):
        request, response = super().create_request(scope, body_file)
        if request is not None and not request.META.get("CONTENT_LENGTH"):
            # A chunked body has no Content-Length, and is whole in body_file by now. Without a length DRF took
            # it for empty ("model: This field is required.") and Django's multipart parser found no file.
            size = body_file.seek(0, 2)
            body_file.seek(0)
            if size:
                request.META["CONTENT_LENGTH"] = str(size)
        return request, response


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


class BodyLimits:
    """Refuses request bodies by size and by who sends them, before Django reads them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_length = _header(scope, b"content-length")
        chunked = raw_length is None and _header(scope, b"transfer-encoding") is not None
        try:
            length = int(raw_length) if raw_length is not None else None
        except ValueError:
            length = -1
        if length is not None and length < 0:
            return await _refuse(scope, send, 400, "bad_request", "Content-Length is not a byte count.")
        if not chunked and not length:
            return await self.app(scope, receive, send)  # no body: nothing to guard
        limit = settings.MAX_UPLOAD_BYTES + ENVELOPE_BYTES
        if length is not None and length > limit:
            return await _refuse(scope, send, 413, "request_too_large", _too_large(length, limit))
        if chunked or length > settings.MAX_ANONYMOUS_BODY_BYTES:
            refusal = await _credentials_check(scope)
            if refusal is not None and length is not None:
                return await refusal(send)
            if refusal is not None:
                limit = settings.MAX_ANONYMOUS_BODY_BYTES
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope, receive, send, limit: int) -> None:
        """Pass a body of unknown length on while it stays within ``limit``; past it, Django is told
        the client left (it stops reading and answers nothing) and the 413 is sent from here."""
        state = {"received": 0, "over": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request" and not state["over"]:
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if state["over"] and not state["started"]:
            await _refuse(scope, send, 413, "request_too_large", _too_large(state["received"], limit))


def _too_large(size: int, limit: int) -> str:
    if limit == settings.MAX_ANONYMOUS_BODY_BYTES:
        return (f"The request body is over {limit} bytes, the most accepted without logging in or an API key. "
                "Log in, or send your key as 'Authorization: Bearer YOUR_KEY'.")
    return f"The request body is over {limit} bytes, the most this server accepts (MAX_UPLOAD_BYTES)."


async def _credentials_check(scope):
    """None when the request carries a valid session or API key; else a coroutine function that
    sends the refusal (401 under /v1 as the API would answer anyway, 413 elsewhere, 429 for an
    address locked out after too many bad keys)."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        address = (scope.get("client") or ("", 0))[0]
        try:
            user, _ = await database_sync_to_async(api_key_user)(authorization.encode("latin-1"), address)
        except ApiKeyRefused as refused:
            return _refusal(scope, 401, refused.code, str(refused), type_="authentication_error")
        except Throttled as throttled:
            return _refusal(scope, 429, "too_many_invalid_keys", str(throttled.detail), type_="requests",
                            headers=[(b"retry-after", str(throttled.wait).encode())])
        if user is not None:
            return None
    session_key = parse_cookie(_header(scope, b"cookie") or "").get(settings.SESSION_COOKIE_NAME)
    if session_key and NUL not in session_key and \
            await database_sync_to_async(_session_user_id)(session_key) is not None:
        return None
    if is_api_path(scope["path"]):
        return _refusal(scope, 401, "invalid_api_key", "You didn't provide an API key. Send it as "
                        "'Authorization: Bearer YOUR_KEY'; create keys on the API keys page.",
                        type_="authentication_error")
    return _refusal(scope, 413, "request_too_large", _too_large(0, settings.MAX_ANONYMOUS_BODY_BYTES))


def _session_user_id(session_key: str):
    """The logged-in user's id for a session cookie, checked as Django's own middleware checks it."""
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return auth.get_user(request).pk


def _refusal(scope, status: int, code: str, message: str, **options):
    async def refuse(send):
        await _refuse(scope, send, status, code, message, **options)
    return refuse


async def _refuse(scope, send, status: int, code: str, message: str, *, type_: str = "invalid_request_error",
                  headers: list | None = None) -> None:
    if is_api_path(scope["path"]):
        body = json.dumps(error_body(message, code=code, type_=type_)).encode()
        content_type = b"application/json"
    else:
        body = (message + "\n").encode()
        content_type = b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# --- websockets ---------------------------------------------------------------------------------

def _origin_tuple(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _is_secure(scope) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    if settings.SECURE_PROXY_SSL_HEADER:
        name, expected = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        value = _header(scope, header)
        return value is not None and value.split(",")[0].strip() == expected
    return False


def origin_allowed(scope) -> bool:
    """The Origin is this site as the browser addressed it (scheme, host, port) or a trusted one."""
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if not origin or not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    parsed = _origin_tuple(origin)
    if parsed is None:
        return False
    scheme = "https" if _is_secure(scope) else "http"
    if parsed == _origin_tuple(f"{scheme}://{host}"):
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in trusted:  # Django's form: https://*.example.com, for the scheme and any subdomain
            parts = urlsplit(trusted)
            pattern = parts.netloc.lower().removeprefix("*")  # ".example.com": the domain and its subdomains
            if parts.scheme == parsed[0] and is_same_domain(urlsplit(origin).netloc.lower(), pattern):
                return True
        elif parsed == _origin_tuple(trusted):
            return True
    return False


class WebsocketOriginCheck:
    """Refuses a websocket whose Origin is not this site (Channels' own check ignores the port)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


def _has_nul(scope) -> bool:
    cookies = parse_cookie(_header(scope, b"cookie") or "")
    query = unquote_to_bytes(scope.get("query_string", b""))
    return NUL in scope["path"] or NUL.encode() in query or has_nul([*cookies, *cookies.values()])


class WebsocketNulRefusal:
    """Refuses a websocket whose path, query or cookies hold a NUL: an id or session key with one
    would reach PostgreSQL, which raises (the HTTP side: ``finetune_site/nul_guard.py``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and _has_nul(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class WebsocketApiKeyAuth:
    """A websocket with no session user but an ``Authorization: Bearer`` key is that key's user, acting in
    the key's project; a session's user acts in the project the session chose."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        user = scope.get("user")
        authorization = _header(scope, b"authorization")
        if authorization and (user is None or not user.is_authenticated):
            try:
                key_user, key = await database_sync_to_async(api_key_user)(
                    authorization.encode("latin-1"), (scope.get("client") or ("", 0))[0])
            except (ApiKeyRefused, Throttled):
                return await WebsocketDenier()(scope, receive, send)
            if key_user is not None:
                scope = {**scope, "user": await database_sync_to_async(user_acting)(key_user, key.project_id)}
        elif user is not None and user.is_authenticated:
            session = scope.get("session") or {}
            await database_sync_to_async(user_acting)(user, session.get(PROJECT_SESSION_KEY))
        return await self.app(scope, receive, send)
