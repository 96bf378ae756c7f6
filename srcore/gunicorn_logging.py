"""The gunicorn logger ``srcore serve`` runs with: access log lines without secrets.

Gunicorn writes its access log (when an operator turns it on, with ``--access-logfile``
or ``GUNICORN_CMD_ARGS``) after the response, from the raw request line. This logger
writes the request target srcore redacted while routing the request (it knows which URL
variables are tokens), or redacts the query itself for requests srcore never saw, and
redacts the Referer, which carries the last page's query string. What the client sent
(the request line, the User-Agent, any header a custom format names) is written with its
line breaks and control characters escaped, as in srcore's own access log.

Imported by gunicorn only: importing it imports gunicorn.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from srcore.logsetup import log_safe
from srcore.redact import ENVIRON_KEY, REDACTED, redact_target, redact_url

__all__ = ["AccessLogger"]

#: Credentials a format could name, as headers (``%({cookie}i)s``) or as the environ's
#: copies of them (``%({http_cookie}e)s``).
_HIDDEN_HEADERS = (
    "{authorization}i",
    "{cookie}i",
    "{set-cookie}o",
    "{http_authorization}e",
    "{http_cookie}e",
)


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with the request target, query and Referer redacted."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        target = environ.get(ENVIRON_KEY)
        if not isinstance(target, str):
            target = redact_target(
                str(environ.get("PATH_INFO") or ""), str(environ.get("QUERY_STRING") or ""), {}
            )
        path, _, query = target.partition("?")
        atoms["r"] = f"{environ.get('REQUEST_METHOD')} {target} {environ.get('SERVER_PROTOCOL')}"
        atoms["U"] = path
        atoms["q"] = query
        atoms["f"] = redact_url(str(atoms.get("f", "-")))
        if "{referer}i" in atoms:
            atoms["{referer}i"] = redact_url(str(atoms["{referer}i"]))
        for name in _HIDDEN_HEADERS:
            if name in atoms:
                atoms[name] = REDACTED
        return {
            name: log_safe(value) if isinstance(value, str) else value
            for name, value in atoms.items()
        }
