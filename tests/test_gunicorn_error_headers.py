"""gunicorn's own error answers, as srcore's workers send them, carry the security headers
every response of the app carries, whether the body is gunicorn's page or srcore's JSON."""

from __future__ import annotations

import pytest

from srcore.gunicorn_worker import error_answer
from srcore.headers import security_headers

_PAGE = (
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/html\r\n"
    b"Content-Length: 11\r\n\r\n<p>bad</p>\n"
)


@pytest.mark.parametrize("path", [None, "/api/things", "/", "/profile"])
def test_every_error_answer_carries_the_security_headers(path: str | None) -> None:
    answer = error_answer(_PAGE, path, ValueError("Invalid request line"))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    for name, value in security_headers(production=False, origin="").items():
        assert headers[name] == value, name
    assert int(headers["Content-Length"]) == len(body)
    if path is not None and not path.startswith("/api/"):
        assert body == b"<p>bad</p>\n"
    else:
        assert body.startswith(b'{"errors"')
