"""The SSRF guard: a webhook (or Slack) URL must resolve to public addresses only, unless the
operator allows private ones (``WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1``).

It is checked when the URL is saved and again at every send; the send connects to the very address
that was checked (``GuardedHTTPConnection``), so a name that resolves elsewhere the second time
(DNS rebinding) cannot reach a private address either.
"""

import http.client
import ipaddress
import socket
from urllib.parse import urlsplit


class AddressRefused(Exception):
    """The URL is malformed, does not resolve, or resolves to an address the guard refuses."""


def address_allowed(address: str, *, allow_private: bool) -> bool:
    """Whether a send may connect to ``address``: public unicast, or anything when ``allow_private``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if allow_private:
        return not ip.is_unspecified and not ip.is_multicast
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                                 or ip.is_multicast or ip.is_unspecified)


def url_parts(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ``AddressRefused`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise AddressRefused(f"{url!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressRefused(f"{url!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise AddressRefused("the URL must not carry a user name or password")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def host_resolve(host: str, port: int, *, allow_private: bool) -> list[tuple]:
    """The addresses of ``host`` a send may use (socket.getaddrinfo entries); refuses a name that does
    not resolve or that has any refused address (one private answer is enough to refuse it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise AddressRefused(f"{host} does not resolve ({error})") from None
    refused = sorted({info[4][0] for info in infos if not address_allowed(info[4][0], allow_private=allow_private)})
    if refused:
        raise AddressRefused(f"{host} resolves to {', '.join(refused)}, a private, loopback or link-local address; "
                             "the operator allows those only with WEBHOOK_ALLOW_PRIVATE_ADDRESSES=1")
    return infos


def url_check(url: str, *, allow_private: bool) -> None:
    """Raise ``AddressRefused`` unless ``url`` is http(s) and its host resolves to allowed addresses."""
    _, host, port = url_parts(url)
    host_resolve(host, port, allow_private=allow_private)


def guarded_connect(host: str, port: int, *, timeout: float, allow_private: bool) -> socket.socket:
    """A socket connected to the first allowed address of ``host`` that answers (the address checked
    is the address used). ``AddressRefused`` or ``OSError``."""
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in host_resolve(host, port, allow_private=allow_private):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error or OSError(f"{host}: no address to connect to")


def url_reach_check(url: str, *, allow_private: bool, timeout: float) -> None:
    """``url_check``, then open a connection to it (sending nothing): ``OSError`` when nobody listens."""
    _, host, port = url_parts(url)
    guarded_connect(host, port, timeout=timeout, allow_private=allow_private).close()


class _Guarded:
    def __init__(self, *args, allow_private: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # http.client sets this per instance in __init__ (socket.create_connection): replace it after
        self._create_connection = lambda address, timeout, source_address=None: guarded_connect(
            address[0], address[1], timeout=timeout, allow_private=allow_private)


class GuardedHTTPConnection(_Guarded, http.client.HTTPConnection):
    """An HTTP connection that connects only to addresses the guard allows (checked at connect)."""


class GuardedHTTPSConnection(_Guarded, http.client.HTTPSConnection):
    """The same over TLS (the certificate is checked against the URL's host name)."""


def post_json(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> int:
    """POST ``body`` to ``url`` through the guard, never following a redirect; the response status."""
    scheme, host, port = url_parts(url)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kind = GuardedHTTPSConnection if scheme == "https" else GuardedHTTPConnection
    connection = kind(host, port, timeout=timeout, allow_private=allow_private)
    try:
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/json", "User-Agent": "finetune-webhooks/1",
                                    **headers})
        response = connection.getresponse()
        response.read(64 * 1024)  # a little of the body, so the connection closes cleanly
        return response.status
    finally:
        connection.close()
