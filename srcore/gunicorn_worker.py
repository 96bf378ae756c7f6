"""The gunicorn workers ``srcore serve`` runs: gunicorn's own error answers, srcore's body.

gunicorn answers a request it cannot parse (an invalid request line, method, HTTP version
or header, obsolete line folding, a Content-Length it refuses...) itself, before any app
sees it, with its own HTML page. These workers keep gunicorn's answer — its status code,
its warning and its access log line — and send srcore's standard error body instead of the
page when the request is for the API: when its path is under ``/api/``, or when gunicorn
could not read a path at all. The second case is a request line no browser sends (browsers
only send well-formed ones), so whoever sent it is a program, and programs read the JSON
body. Any other request keeps gunicorn's small HTML page. Either answer carries the
security headers every response of the app carries (:mod:`srcore.headers`), so no page of
a service, not even gunicorn's, can be framed or sniffed into something else.

The module is also the gunicorn configuration srcore passes (``--config
python:srcore.gunicorn_worker``, see :func:`srcore.serving.gunicorn_options`): its server
hooks give the workers one private directory for their metrics (:mod:`srcore.metrics`), so
a scrape, whichever worker answers it, reports the requests of all of them.

Imported by gunicorn only: importing it imports gunicorn.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

from gunicorn import util
from gunicorn.http.message import Request
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

from srcore.headers import security_headers
from srcore.metrics_files import fold_dead_process, make_metrics_dir, remove_stale_metrics_dirs
from srcore.routing import API_PREFIX
from srcore.validation import FieldError, error_body

__all__ = [
    "SyncWorker",
    "ThreadWorker",
    "child_exit",
    "error_answer",
    "on_exit",
    "on_starting",
    "request_path",
]

#: The headers of every answer; HSTS is left to the app, which knows the origin.
_SECURITY_HEADERS = "".join(
    f"{name}: {value}\r\n" for name, value in security_headers(production=False, origin="").items()
).encode("latin-1")


class _Capture:
    """Stands in for the client socket while gunicorn writes its error answer.

    gunicorn decides the status (400, 414, 431, 501...) and writes the whole answer in one
    call; capturing it reuses that decision instead of repeating gunicorn's mapping.
    """

    def __init__(self) -> None:
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # "non-blocking already": gunicorn then writes without switching modes

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data


def request_path(req: Any, exc: BaseException) -> str | None:
    """The path of the request gunicorn failed on, or ``None`` if it never read one.

    *req* is set once the whole head is parsed, and gunicorn attaches it to some header
    errors (``exc.req``). A header it refuses while parsing the head (an invalid name,
    obsolete folding) carries neither, but the request being built — whose request line,
    path included, was already parsed — is the ``self`` of a frame the error went through.
    """
    candidates = [req, getattr(exc, "req", None)]
    tb = exc.__traceback__
    while tb is not None:
        candidates.append(tb.tb_frame.f_locals.get("self"))
        tb = tb.tb_next
    for candidate in candidates:
        if isinstance(candidate, Request) and isinstance(candidate.path, str):
            return candidate.path
    return None


def error_answer(written: bytes, path: str | None, exc: BaseException) -> bytes:
    """gunicorn's error answer *written*, with srcore's JSON body if the request calls for it.

    The status line is gunicorn's; the reason is what gunicorn found wrong, except for a
    server error, whose details stay in the log. Either way the answer carries srcore's
    security headers.
    """
    head, _, rest = written.partition(b"\r\n")
    if path is not None and not path.startswith(API_PREFIX):
        return head + b"\r\n" + _SECURITY_HEADERS + rest
    parts = head.decode("latin-1").split(" ", 2)
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        return head + b"\r\n" + _SECURITY_HEADERS + rest
    status = int(parts[1])
    reason = str(exc) if status < 500 else ""
    body = json.dumps(error_body([FieldError(reason=reason or parts[2])])).encode()
    return (
        (
            f"{head.decode('latin-1')}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode("latin-1")
        + _SECURITY_HEADERS
        + b"\r\n"
        + body
    )


class _ErrorAnswers:
    """Mixed into a gunicorn worker: its error answers go through :func:`error_answer`."""

    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        capture = _Capture()
        super().handle_error(req, capture, addr, exc)  # type: ignore[misc]
        if not capture.data:
            return
        try:
            util.write_nonblock(
                client, error_answer(bytes(capture.data), request_path(req, exc), exc)
            )
        except Exception:
            self.log.debug("Failed to send error message.")


class SyncWorker(_ErrorAnswers, _GunicornSyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker (one request at a time per process), srcore's error body.

    Named like gunicorn's: gunicorn replaces a worker class named ``...SyncWorker`` by its
    threaded worker when ``--threads`` is above 1, so :func:`srcore.serving.gunicorn_options`
    picks :class:`ThreadWorker` itself for threads.
    """


class ThreadWorker(_ErrorAnswers, _GunicornThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker (``--threads`` above 1), srcore's error body."""


# Server hooks: gunicorn's master calls them by name (the module is its configuration).
# srcore.metrics.MULTIPROC_DIR; not imported, so the master does not load prometheus-client
# before the variable is set (it picks how to store values when first imported).
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
#: The master's hold on its metrics directory's SERVER_LOCK, while it runs.
_server_lock: int | None = None


def on_starting(server: Any) -> None:
    """Before any worker forks: a fresh directory only this server's processes can read.

    Always a new one, even if the variable was inherited: values left by an earlier run
    or another service would be added to this one's. The directories of servers that were
    killed before they could remove theirs are removed first
    (:func:`srcore.metrics_files.remove_stale_metrics_dirs`): only srcore's own, and only the
    files srcore makes in them.

    With ``--preload`` the master has built the app, and so imported prometheus-client,
    before this hook: it chose then to keep values in memory, and each worker would count
    where no scrape reads. It chooses again now, before any value exists (every metric of
    srcore's has labels, and a labelled metric makes its values at its first count, in a
    worker).
    """
    global _server_lock
    for path in remove_stale_metrics_dirs():
        _log(server, "info", f"metrics: removed {path}, left by a server that was killed")
    path, _server_lock = make_metrics_dir()  # mode 0700
    os.environ[_MULTIPROC_DIR] = path
    _choose_value_class()


def _choose_value_class() -> None:
    """Have a prometheus-client imported already choose where values go by the variable
    as it is now (it reads it once, when first imported)."""
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges leave the sums, its counters stay in them.

    Its other files are folded into the ones of the workers dead before it
    (:func:`srcore.metrics_files.fold_dead_process`), so workers restarted by ``--max-requests``
    or a timeout do not grow the directory, nor the work of every scrape, without end.
    A fold that fails is logged and leaves the files as they were: still counted.
    """
    path = os.environ.get(_MULTIPROC_DIR)
    if not path:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]
        fold_dead_process(path, worker.pid)
    except (OSError, RuntimeError) as exc:
        _log(server, "warning", f"metrics: cannot fold the files of worker {worker.pid}: {exc}")


def on_exit(server: Any) -> None:
    """The server stops: its metrics directory goes with it, and the variable naming it."""
    global _server_lock
    path = os.environ.pop(_MULTIPROC_DIR, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        _choose_value_class()
    if _server_lock is not None:
        os.close(_server_lock)
        _server_lock = None


def _log(server: Any, level: str, message: str) -> None:
    log = getattr(server, "log", None)
    if log is not None:
        getattr(log, level)(message)
