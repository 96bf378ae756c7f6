"""Secrets out of access logs: tokens in paths, OAuth codes and states in query strings.

A password-reset link (``/reset/<token>``), a confirmation link, an OAuth redirect back
with ``code=`` and ``state=``: each is a credential for as long as it is valid, and an
access log is read by more people, kept longer and shipped further than the database.
Values are replaced by :data:`REDACTED` by their names: query parameters and URL
variables whose name says token, code, secret, password, state, key, nonce, signature or
verifier. Plain functions over strings, used by srcore's request log and by the gunicorn
logger ``srcore serve`` configures (:mod:`srcore.gunicorn_logging`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from werkzeug.serving import WSGIRequestHandler

__all__ = [
    "ENVIRON_KEY",
    "REDACTED",
    "dev_request_handler",
    "is_secret_name",
    "redact_query",
    "redact_target",
    "redact_url",
]

REDACTED = "[redacted]"

#: The WSGI environ key where srcore leaves the redacted request target (path and query)
#: of the current request, for a server's access log written after the response.
ENVIRON_KEY = "srcore.log_target"

_SECRET_NAME = re.compile(
    r"token|code|secret|passw|state|key|nonce|sig|verifier|assertion|credential|session",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a parameter called *name* may carry a credential."""
    return bool(_SECRET_NAME.search(name))


def redact_query(query: str) -> str:
    """*query* (without ``?``) with the values of secret-named parameters replaced.

    Works on the raw text, so the line keeps the order and encoding the client sent.
    """
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={REDACTED}" if eq and is_secret_name(name) else item)
    return "&".join(parts)


def redact_target(path: str, query: str, view_args: Mapping[str, object] | None) -> str:
    """The request target ``path?query`` fit for a log line.

    *view_args* are the URL variables the route matched: a secret-named one
    (``/reset/<token>``) has its value replaced in *path*.
    """
    for name, value in (view_args or {}).items():
        text = str(value)
        if text and is_secret_name(name):
            path = path.replace(text, REDACTED)
    query = redact_query(query)
    return f"{path}?{query}" if query else path


def redact_url(url: str) -> str:
    """*url* (a Referer, say) with the secret-named parameters of its query replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?", 1)[0]
    if not parts.query:
        return url
    return urlunsplit(parts._replace(query=redact_query(parts.query)))


@functools.cache
def dev_request_handler() -> type[WSGIRequestHandler]:
    """Werkzeug's request handler with its request log line redacted.

    ``srcore serve --debug`` (and ``srcore dev``, which runs it) serves with Werkzeug's
    development server, which logs every request line as the client sent it.
    """
    from werkzeug.serving import WSGIRequestHandler

    class RedactingRequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            raw = getattr(self, "path", None)
            if raw is None:
                super().log_request(code, size)
                return
            environ = getattr(self, "environ", None) or {}
            target = environ.get(ENVIRON_KEY)
            if not isinstance(target, str):
                path, _, query = raw.partition("?")
                target = redact_target(path, query, None)
            self.path = target
            try:
                super().log_request(code, size)
            finally:
                self.path = raw

    return RedactingRequestHandler
