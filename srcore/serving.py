"""How srcore runs a service under gunicorn: the options every command line shares.

srcore enforces its own limits on the request line and headers (:mod:`srcore.hygiene`)
and answers with its standard error body, JSON under ``/api/``. gunicorn's limits are set
above them, so a request past srcore's limit reaches the app instead of getting the
server's own HTML page; gunicorn's remain as the outer bound.

A request gunicorn cannot parse at all (an invalid request line, method, HTTP version or
header, obsolete line folding) never reaches the app: gunicorn answers it itself. srcore's
worker classes (:mod:`srcore.gunicorn_worker`) keep gunicorn's status and logs and send
srcore's standard error body for the API, so every error answer has the same shape.
"""

from __future__ import annotations

import os

from srcore.hygiene import MAX_HEADER_BYTES, MAX_HEADER_COUNT

__all__ = ["GUNICORN_LIMITS", "bind_problem", "gunicorn_options"]

#: gunicorn's request limits: its ceiling for the request line, and twice srcore's own
#: for the header fields (the request line also holds the method and the HTTP version).
GUNICORN_LIMITS: dict[str, int] = {
    "limit-request-line": 8190,
    "limit-request-fields": 2 * MAX_HEADER_COUNT,
    "limit-request-field_size": 2 * MAX_HEADER_BYTES,
}


def gunicorn_options(*, threads: int = 1) -> list[str]:
    """The gunicorn command-line options for srcore's limits and worker class.

    *threads* is the ``--threads`` the command line passes: above 1 the worker is the
    threaded one (gunicorn would otherwise swap in its own, without srcore's error body).
    """
    worker = "ThreadWorker" if threads > 1 else "SyncWorker"
    options = [
        # Its server hooks share the workers' metrics (see srcore.metrics).
        "--config",
        "python:srcore.gunicorn_worker",
        "--worker-class",
        f"srcore.gunicorn_worker.{worker}",
        # No header sets SCRIPT_NAME (gunicorn takes it by default from a proxy on this
        # host, which passes on what the client sent): a client would mount the service
        # where it likes, under paths the proxy's rules do not name. The origin says
        # where a service is; a header with an underscore is dropped.
        "--forwarder-headers",
        "",
    ]
    for name, value in GUNICORN_LIMITS.items():
        options += [f"--{name}", str(value)]
    return options


def bind_problem(bind: str) -> str | None:
    """What is wrong with a ``--bind`` value that gunicorn would take in a way nobody means,
    or None.

    gunicorn reads an empty address as ``0.0.0.0:8000``: every interface, where clients
    reach the service past its proxy, forge the ``X-Forwarded-*`` headers it trusts and
    read its metrics. A systemd unit's ``--bind ${BIND}`` passes one empty argument when
    ``BIND`` is not set (no environment file for that service). A port alone (``5001``) is
    read as a host named ``5001`` on port 8000.
    """
    value = bind.strip()
    if not value:
        return (
            "is empty, which gunicorn takes as every interface on port 8000: give "
            "HOST:PORT (127.0.0.1:5001), or leave --bind out for 127.0.0.1 and the "
            "origin's port (in a systemd unit, is BIND set in its environment file?)"
        )
    if value.isdigit():
        return f"{value!r} is a port alone: write 127.0.0.1:{value} (or HOST:{value})"
    if value.startswith("unix:"):
        return _socket_directory_problem(value.removeprefix("unix:"))
    return None


def _ancestors(directory: str) -> list[str]:
    """*directory*'s parents from the root down, then *directory* itself."""
    parts = [directory]
    while (parent := os.path.dirname(parts[-1])) != parts[-1]:
        parts.append(parent)
    return parts[::-1]


def _socket_directory_problem(path: str) -> str | None:
    """Why this user cannot make a Unix socket at *path*, or None.

    gunicorn makes the socket (removing one left there first) in its directory, and when
    it cannot (a read-only root, a directory of root's) it tried five times in five
    seconds, saying "connection to ... failed" each time, before giving up.
    """
    directory = os.path.dirname(os.path.abspath(path))
    shut = [d for d in _ancestors(directory) if os.path.isdir(d) and not os.access(d, os.X_OK)]
    if shut:  # nothing beyond it can be looked at: it is not that nothing is there
        what = f"is out of reach: this user (uid {os.geteuid()}) may not enter {shut[0]}"
    elif not os.path.isdir(directory):
        what = "does not exist"
    elif not os.access(directory, os.W_OK | os.X_OK):
        what = f"is not writable by this user (uid {os.geteuid()})"
    else:
        return None
    return (
        f"unix:{path}: the socket's directory {directory} {what}: give a directory this "
        "user can write in (such as /run/srcore, owned by it)"
    )
