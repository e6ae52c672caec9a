"""The web server as a stranger meets it: a real server process (uvicorn, DEBUG off), real sockets.

The memory cases measure the server's RSS with psutil while 300 MB bodies go through; the bodies
are generated as they are sent, so the test process never holds one either.
"""

import json
import socket
import threading
import time

import psutil
import pytest
import requests

from accounts_app.services import api_key_create
from datasets_app.models import Dataset
from tests.e2e import WebServer
from tests.factories import make_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
MiB = 2**20
LINE = (json.dumps({"messages": [{"role": "user", "content": "Classify: " + "the match ended 2-1 " * 5},
                                 {"role": "assistant", "content": "sport"}]}) + "\n").encode()


class GeneratedBody:
    """``size`` bytes of JSONL (between a ``head`` and a ``tail``), made while they are read."""

    def __init__(self, size: int, head: bytes = b"", tail: bytes = b"") -> None:
        self.parts = [head, tail]
        self.left = size - size % len(LINE)
        self.size = len(head) + self.left + len(tail)
        self.block = LINE * (MiB // len(LINE))

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        if self.parts[0]:
            head, self.parts[0] = self.parts[0], b""
            return head
        if self.left:
            piece = self.block[:min(self.left, len(self.block))]
            self.left -= len(piece)
            return piece
        tail, self.parts[1] = self.parts[1], b""
        return tail

    def __iter__(self):  # for a chunked body: requests sends an iterable without Content-Length
        while chunk := self.read():
            yield chunk


def upload_body(size: int, filename: str = "big.jsonl") -> tuple[GeneratedBody, str]:
    """A multipart/form-data body for POST /v1/files with a generated file of about ``size`` bytes."""
    boundary = "finetune-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode()
    return GeneratedBody(size, head, f"\r\n--{boundary}--\r\n".encode()), f"multipart/form-data; boundary={boundary}"


class PeakRss:
    """The server's largest RSS while the block runs, sampled every 20 ms, minus its RSS before."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)

    def __enter__(self):
        self.before = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def grew_mb(self) -> float:
        return (self.peak - self.before) / MiB


def database_url() -> str:
    from django.conf import settings
    from django.db import connection

    base = settings.DATABASES["default"]
    return f"postgres://{base['USER']}@{base['HOST']}:{base['PORT']}/{connection.settings_dict['NAME']}"


@pytest.fixture
def server(transactional_db, collected_static):
    """A fresh server with no DEBUG in its environment, as production runs it."""
    server = WebServer(database_url())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def small_limits_server(transactional_db, collected_static):
    server = WebServer(database_url(), MAX_UPLOAD_BYTES=str(8 * MiB))
    server.start()
    yield server
    server.stop()


def upload(server, key: str, size: int) -> requests.Response:
    body, content_type = upload_body(size)
    return requests.post(server.url + "/v1/files", data=body, timeout=300,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})


def warm_up(server, key: str) -> None:
    """Imports and first-use caches of the upload path happen before the measurement."""
    for _ in range(2):
        assert upload(server, key, 12 * MiB).status_code == 200
        requests.post(server.url + "/healthz", data=GeneratedBody(2 * MiB), timeout=60)


def raw_request(port: int, head: str) -> tuple[int, dict, bytes]:
    """Send only a request's head (no body) and read the answer: proof it came before any body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
        return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_unauthenticated_300_mb_post_is_refused_in_constant_memory(server):
    key = api_key_create(user=make_user(), name="warm")[1]
    warm_up(server, key)
    with PeakRss(server.process.pid) as healthz:
        refused = requests.post(server.url + "/healthz", data=GeneratedBody(300 * MiB), timeout=300)
    assert refused.status_code == 413 and "without logging in or an API key" in refused.text
    with PeakRss(server.process.pid) as files:
        anonymous = requests.post(server.url + "/v1/files", data=GeneratedBody(300 * MiB), timeout=300)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
    with PeakRss(server.process.pid) as chunked:  # no Content-Length: counted as it arrives
        cut = requests.post(server.url + "/accounts/login/", data=iter(GeneratedBody(300 * MiB)), timeout=300)
    assert cut.status_code == 413
    with PeakRss(server.process.pid) as bad_key:
        wrong = requests.post(server.url + "/v1/files", data=GeneratedBody(300 * MiB), timeout=300,
                              headers={"Authorization": "Bearer sk-ft-not-a-key-at-all-0000000000000"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    print(f"RSS growth refusing 300 MB: /healthz {healthz.grew_mb:.1f} MB, /v1/files {files.grew_mb:.1f} MB, "
          f"chunked {chunked.grew_mb:.1f} MB, bad key {bad_key.grew_mb:.1f} MB")
    for measured in (healthz, files, chunked, bad_key):
        assert measured.grew_mb < 100


def test_authenticated_300_mb_uploads_spill_to_disk_one_and_four_at_once(server):
    user = make_user()
    key = api_key_create(user=user, name="big")[1]
    warm_up(server, key)
    with PeakRss(server.process.pid) as one:
        accepted = upload(server, key, 300 * MiB)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["bytes"] > 299 * MiB and accepted.json()["status"] == "uploaded"

    replies = []
    with PeakRss(server.process.pid) as four:
        threads = [threading.Thread(target=lambda: replies.append(upload(server, key, 300 * MiB)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [reply.status_code for reply in replies] == [200] * 4
    print(f"RSS growth accepting 300 MB: one upload {one.grew_mb:.1f} MB, four at once {four.grew_mb:.1f} MB")
    assert one.grew_mb < 100 and four.grew_mb < 300
    sizes = set(Dataset.objects.filter(owner=user, byte_size__gt=299 * MiB).values_list("byte_size", flat=True))
    assert len(sizes) == 1 and Dataset.objects.filter(owner=user, byte_size__gt=299 * MiB).count() == 5
    for dataset_id in [accepted.json()["id"], *(reply.json()["id"] for reply in replies)]:  # free the disk
        requests.delete(f"{server.url}/v1/files/{dataset_id}", headers={"Authorization": f"Bearer {key}"})


def test_bodies_over_the_limits_are_refused_before_they_are_read(small_limits_server):
    server = small_limits_server
    key = api_key_create(user=make_user(), name="limits")[1]
    # Over MAX_UPLOAD_BYTES (8 MiB here), with a key: the answer comes with no byte of body sent.
    status, headers, body = raw_request(server.port, (
        "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {12 * MiB}\r\n\r\n"))
    error = json.loads(body)["error"]
    assert status == 413 and headers["content-type"] == "application/json"
    assert error["code"] == "request_too_large" and "MAX_UPLOAD_BYTES" in error["message"]
    # Over MAX_ANONYMOUS_BODY_BYTES without credentials: the login form, with no body sent.
    status, headers, body = raw_request(server.port, (
        "POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {2 * MiB}\r\n\r\n"))
    assert status == 413 and b"without logging in or an API key" in body
    # A chunked body with a key is counted as it arrives and cut off past the limit.
    cut = requests.put(server.url + "/v1/datasets/uploads/upload-x/chunk?offset=0", timeout=60,
                       data=iter(GeneratedBody(20 * MiB)), headers={"Authorization": f"Bearer {key}"})
    assert cut.status_code == 413 and cut.json()["error"]["code"] == "request_too_large"
    # Within the limits all is as before: a 6 MiB file with a key is stored.
    assert upload(server, key, 6 * MiB).status_code == 200
    # ... and so is one sent chunked (no Content-Length): it used to arrive as an empty form, "no file".
    body, content_type = upload_body(2 * MiB, filename="chunked.jsonl")
    chunked = requests.post(server.url + "/v1/files", data=iter(body), timeout=120,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    assert chunked.status_code == 200 and chunked.json()["filename"] == "chunked.jsonl", chunked.text
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"ok": True}


def test_a_logged_in_page_may_send_chunks_over_the_anonymous_limit(small_limits_server):
    """The datasets page uploads 4 MiB chunks with its session cookie and CSRF token."""
    server = small_limits_server
    make_user("paula")
    browser = requests.Session()
    browser.get(server.url + "/accounts/login/")
    token = browser.cookies["csrftoken"]
    logged_in = browser.post(server.url + "/accounts/login/", allow_redirects=False, timeout=10,
                             data={"username": "paula", "password": "pw-paula", "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302
    headers = {"X-CSRFToken": browser.cookies["csrftoken"]}
    size = 3 * MiB
    opened = browser.post(server.url + "/v1/datasets/uploads", json={"filename": "t.jsonl", "bytes": size},
                          headers=headers, timeout=10)
    assert opened.status_code == 200, opened.text
    chunk = browser.put(f"{server.url}/v1/datasets/uploads/{opened.json()['id']}/chunk?offset=0",
                        data=b"x" * size, headers={**headers, "Content-Type": "application/octet-stream"}, timeout=60)
    assert chunk.status_code == 200 and chunk.json()["offset"] == size
    # the same chunk with a logged-out cookie is refused at the door
    stranger = requests.put(f"{server.url}/v1/datasets/uploads/{opened.json()['id']}/chunk?offset={size}",
                            data=b"x" * size, cookies={"sessionid": "not-a-session"}, timeout=60)
    assert stranger.status_code == 401


def test_debug_is_off_unless_asked_for(server):
    """No DEBUG in the environment: error pages name no URL patterns, settings or tracebacks."""
    missing = requests.get(server.url + "/no/such/page", timeout=10)
    assert missing.status_code == 404
    assert "URLconf" not in missing.text and "Traceback" not in missing.text and "DEBUG" not in missing.text
    bad_host = requests.get(server.url + "/", headers={"Host": "evil.example"}, timeout=10)
    assert bad_host.status_code == 400
    assert "DisallowedHost" not in bad_host.text and "ALLOWED_HOSTS" not in bad_host.text
    api_missing = requests.get(server.url + "/v1/nope", timeout=10)
    assert api_missing.status_code == 404 and api_missing.json()["error"]["code"] == "unknown_url"
