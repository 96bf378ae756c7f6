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
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs

__all__ = ["FormReceiver", "form_receiver", "serving"]


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

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        found.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        yield found


_Server = TypeVar("_Server", bound=HTTPServer)


@contextlib.contextmanager
def serving(server: _Server) -> Iterator[_Server]:
    """Run *server* on a thread of its own until the block ends, then stop and close it
    (a test's receiver: it notices the stop within 0.05 s)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
