"""A webhook receiver started by a test: a tiny ``http.server`` in a thread that records every POST."""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webhooks_app.signing import signature_verify


class Received:
    def __init__(self, headers: dict[str, str], body: bytes, path: str) -> None:
        self.headers, self.body, self.path = headers, body, path

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def verifies(self, secret: str) -> bool:
        return signature_verify(secret, self.headers, self.body)


class Receiver:
    """Records each request; ``answer(index, request)`` gives the status to reply (200 by default)
    and may block, as a slow receiver would."""

    def __init__(self, answer: Callable[[int, Received], int] | None = None) -> None:
        self.answer = answer or (lambda index, request: 200)
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Received({k.lower(): v for k, v in self.headers.items()}, body, self.path)
                with receiver.lock:
                    index = len(receiver.received)
                    receiver.received.append(request)
                status = receiver.answer(index, request)
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", "http://169.254.169.254/")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender is gone (killed mid-delivery)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ids(self) -> list[str]:
        with self.lock:
            return [request.webhook_id for request in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
