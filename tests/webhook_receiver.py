"""A real HTTP receiver on loopback for event deliveries: it can go down and come back on
the same port, and can answer errors for a while."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support import free_port


class Receiver:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[tuple[dict, bytes]] = []  # (headers, body) in arrival order
        self.fail_next = 0  # answer 500 to this many requests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    fail = receiver.fail_next > 0
                    if fail:
                        receiver.fail_next -= 1
                    else:
                        receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict]:
        with self._lock:
            return [json.loads(body) for _, body in self.received]

    def deliveries(self) -> list[tuple[dict, bytes]]:
        with self._lock:
            return list(self.received)
