"""An HTTP receiver on 127.0.0.1 that keeps the form bodies POSTed to it.

What a relying party's back-channel logout endpoint (or any form-posting callback) looks
like from the outside: tests point meta at it and read what arrived.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["FormReceiver", "form_receiver"]


@dataclass
class FormReceiver:
    """The URL to POST to, and the form bodies that arrived there (first value per key)."""

    url: str = ""
    bodies: list[dict[str, str]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, str]]:
        """The bodies, once *count* arrived or *timeout* seconds passed."""
        end = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < end:
            self.arrived.wait(0.05)
        return list(self.bodies)


@contextlib.contextmanager
def form_receiver(path: str = "/") -> Iterator[FormReceiver]:
    """Serve a :class:`FormReceiver` at *path* on a free 127.0.0.1 port until the block ends;
    every POST is answered 200."""
    found = FormReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            found.bodies.append({k: v[0] for k, v in parse_qs(raw).items()})
            found.arrived.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
