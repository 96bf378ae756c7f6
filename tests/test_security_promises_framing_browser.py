"""docs/security.md, "Security headers": no page can be framed, as Chromium sees it.

The headers are checked on the wire elsewhere (tests/test_security_headers.py); here a page
of another origin frames todo's pages, logged in or not, as a clickjacking page would, and
the browser must show none of them. The framing page is served by a server of its own on
127.0.0.1: another origin (another port) of the same site,
so its frames carry alice's cookie (SameSite=Lax) and would show her private tracker.
(Chromium refuses a public page's frames to a local address before reading any header, so
a framer on a public name would prove nothing here.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from test_security_promises_outsider import Todo
from test_security_promises_outsider import todo as todo  # the module's running todo

from srcore.testing import launch_chromium

pytestmark = pytest.mark.browser

#: Pages of todo's a framing page would want: a form, alice's private tracker, an error.
FRAMED = ["/create", "/~alice/secret", "/~alice/secret/1/edit", "/no-such-page"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def framing_port(todo: Todo) -> Iterator[int]:
    """A server on 127.0.0.1 whose one page frames each of :data:`FRAMED`."""
    page = "<!doctype html><title>framer</title>" + "".join(
        f'<iframe id="f{i}" src="{todo.origin}{path}" width="600" height="400"></iframe>'
        for i, path in enumerate(FRAMED)
    )

    class Framer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Framer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_no_page_shows_in_a_frame(todo: Todo, browser: Any, framing_port: int) -> None:
    context = browser.new_context()
    try:
        context.set_default_timeout(15_000)
        name, _, value = todo.cookies["alice"].partition("=")
        context.add_cookies([{"name": name, "value": value, "url": todo.origin}])
        page = context.new_page()
        asked: list[str] = []
        context.on("request", lambda r: asked.append(r.url))
        page.goto(f"http://127.0.0.1:{framing_port}/")
        page.wait_for_load_state("load")
        # Every frame was asked for: the browser had todo's answer and refused to show it.
        framed = {todo.origin + path for path in FRAMED}
        assert framed <= set(asked), asked
        for i, path in enumerate(FRAMED):
            frame = page.frame_locator(f"#f{i}")
            # Chromium shows its own error page in the frame; todo's footer is on every page.
            assert frame.locator(".site-footer").count() == 0, path
            assert frame.locator("body").inner_text().strip(), path  # the error page came
    finally:
        context.close()
