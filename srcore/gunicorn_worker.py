"""The gunicorn workers ``srcore serve`` runs: gunicorn's own error answers, srcore's body.

gunicorn answers a request it cannot parse (an invalid request line, method, HTTP version
or header, obsolete line folding, a Content-Length it refuses...) itself, before any app
sees it, with its own HTML page. These workers keep gunicorn's answer — its status code,
its warning and its access log line — and send srcore's standard error body instead of the
page when the request is for a program: when its path is under ``/api/`` or ``/_srcore/``
(the app's own rule, :func:`srcore.errors.json_path`), or when gunicorn could not read a
path at all. The second case is a request line no browser sends (browsers
only send well-formed ones), so whoever sent it is a program, and programs read the JSON
body. A path whose errors the app declared a form of its own for
(:func:`srcore.errors.declare_error_form`: meta's OAuth endpoints, whose clients read an
OAuth ``error``) gets that form's body. Any other request keeps gunicorn's small HTML page.
Every answer carries the security headers every response of the app carries
(:mod:`srcore.headers`), so no page of a service, not even gunicorn's, can be framed or
sniffed into something else.

A worker told to stop (SIGTERM: the server stops, or a reload retires it) lets go of the
listening socket at once, while it finishes the requests it has. gunicorn's workers kept it
until they exited: after the master had closed its own, the kernel still took new
connections into the socket's queue, where no one would accept them, and reset them only
when the last worker was done (up to the graceful timeout, 30 s by default). Now a client
(or a proxy, which then tries another backend) is refused at once.

The module is also the gunicorn configuration srcore passes (``--config
python:srcore.gunicorn_worker``, see :func:`srcore.serving.gunicorn_options`): its server
hooks give the workers one private directory for their metrics (:mod:`srcore.metrics`), so
a scrape, whichever worker answers it, reports the requests of all of them, and check a
reload (SIGHUP) before it retires a single worker (:func:`reload_refusal`).

Imported by gunicorn only: importing it imports gunicorn.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import sys
import time
import traceback
from typing import Any

from gunicorn import util
from gunicorn.http.errors import LimitRequestLine
from gunicorn.http.message import Request
from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

from srcore.errors import ErrorForm, declared_error_form, json_path
from srcore.forks import temporary_directory_problem
from srcore.headers import security_headers
from srcore.metrics_files import fold_dead_process, make_metrics_dir, remove_stale_metrics_dirs
from srcore.validation import FieldError, error_body

__all__ = [
    "SyncWorker",
    "ThreadWorker",
    "child_exit",
    "error_answer",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "reload_refusal",
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
    A request line too long to parse was read up to gunicorn's limit: its path is taken
    from what was read when it ends there (a long query after it), so that a path whose
    errors have a form of their own (:func:`srcore.errors.declare_error_form`) gets it.
    """
    candidates = [req, getattr(exc, "req", None)]
    tb = exc.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_locals)
        candidates.append(tb.tb_frame.f_locals.get("self"))
        tb = tb.tb_next
    for candidate in candidates:
        if isinstance(candidate, Request) and isinstance(candidate.path, str):
            return candidate.path
    if isinstance(exc, LimitRequestLine):
        for names in frames:
            for name in ("buf", "data"):
                path = _path_read(names.get(name))
                if path is not None:
                    return path
    return None


#: How much of an unparsed request line is searched for its path.
_PATH_READ_MAX = 4096
#: The start of a request line whose path was read whole: method, space, an origin-form
#: path, then what ends it (a query, a fragment, the space before the HTTP version).
_LINE_START = re.compile(rb"(?:\r\n)?[!#$%&'*+.^_`|~0-9A-Za-z-]+ (/[^?# \r\n]*)[?# ]")


def _path_read(data: object) -> str | None:
    if not isinstance(data, (bytes, bytearray)):
        return None
    found = _LINE_START.match(bytes(data[:_PATH_READ_MAX]))
    return found.group(1).decode("latin-1") if found else None


def error_answer(written: bytes, path: str | None, exc: BaseException, app: Any = None) -> bytes:
    """gunicorn's error answer *written*, with srcore's JSON body if the request calls for it.

    The status line is gunicorn's; the reason is what gunicorn found wrong, except for a
    server error, whose details stay in the log. A path whose errors *app* declared a form
    for (:func:`srcore.errors.declare_error_form`) gets that form's body and headers
    instead. Either way the answer carries srcore's security headers.
    """
    head, _, rest = written.partition(b"\r\n")
    parts = head.decode("latin-1").split(" ", 2)
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
        return head + b"\r\n" + _SECURITY_HEADERS + rest
    status = int(parts[1])
    reason = (str(exc) if status < 500 else "") or parts[2]
    form = declared_error_form(app, path) if app is not None and path is not None else None
    if form is not None:
        declared = _declared_answer(app, form, status, reason)
        if declared is not None:
            content, headers = declared
            return _answer(head, content, headers)
    if form is None and path is not None and not json_path(path):
        return head + b"\r\n" + _SECURITY_HEADERS + rest
    body = json.dumps(error_body([FieldError(reason=reason)])).encode()
    return _answer(head, body, [("Content-Type", "application/json")])


#: Headers of a declared form's response that the answer sets itself.
_OWN_HEADERS = frozenset(
    {"connection", "content-length", "transfer-encoding"}
    | {name.lower() for name in security_headers(production=False, origin="")}
)
#: What a header may not hold on the wire (a header holding it is left out).
_UNSENDABLE = re.compile("[^\t\x20-\x7e\x80-\xff]")


def _declared_answer(
    app: Any, form: ErrorForm, status: int, reason: str
) -> tuple[bytes, list[tuple[str, str]]] | None:
    """The body and headers of *form*'s error, or ``None`` if it failed (logged): the
    answer is then srcore's JSON error, for a program's path."""
    try:
        with app.app_context():
            response = form(status, reason)
            content = response.get_data()
            headers = [
                (name, value)
                for name, value in response.headers.items()
                if name.lower() not in _OWN_HEADERS and not _UNSENDABLE.search(name + value)
            ]
    except Exception:
        logging.getLogger("srcore").exception("the declared error form of a refused request")
        return None
    return content, headers


def _answer(head: bytes, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        (
            f"{head.decode('latin-1')}\r\n"
            "Connection: close\r\n"
            f"{fields}"
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
            path = request_path(req, exc)
            answer = error_answer(bytes(capture.data), path, exc, getattr(self, "wsgi", None))
            util.write_nonblock(client, answer)
        except Exception:
            self.log.debug("Failed to send error message.")


class _Bound:
    """A listening socket as a request handler sees it: its address, read before the
    socket may be closed under the request (:meth:`SyncWorker.handle_exit`)."""

    def __init__(self, listener: Any) -> None:
        self._listener = listener
        self._name = listener.getsockname()

    def getsockname(self) -> Any:
        return self._name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)


class SyncWorker(_ErrorAnswers, _GunicornSyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker (one request at a time per process), srcore's error body.

    Named like gunicorn's: gunicorn replaces a worker class named ``...SyncWorker`` by its
    threaded worker when ``--threads`` is above 1, so :func:`srcore.serving.gunicorn_options`
    picks :class:`ThreadWorker` itself for threads.

    Told to stop in the middle of a request, it closes its listening sockets there and
    then (after the request, gunicorn's loop touches them no more); told between requests,
    its loop ends at once anyway. Only then, so that the loop never meets a closed socket.
    """

    _in_request = False

    def accept(self, listener: Any) -> None:
        if self.alive:  # several listeners: the next one of a select, after a stop
            super().accept(listener)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        bound = _Bound(listener)
        self._in_request = True
        try:
            if not self.alive:  # told to stop between accept() and here
                self._let_go()
            super().handle(bound, client, addr)
        finally:
            self._in_request = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._in_request:
            self._let_go()

    def _let_go(self) -> None:
        for listener in self.sockets:
            listener.close()


class ThreadWorker(_ErrorAnswers, _GunicornThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker (``--threads`` above 1), srcore's error body.

    Its loop stops accepting as soon as it is told to stop; it then also closes its
    listening sockets, before waiting for the requests in flight (gunicorn closed them
    after that wait).
    """

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()


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
    if (problem := temporary_directory_problem()) is not None:
        raise RuntimeError(problem)  # gunicorn prints it in one line and exits 1
    for path in remove_stale_metrics_dirs():
        _log(server, "info", f"metrics: removed {path}, left by a server that was killed")
    path, _server_lock = make_metrics_dir()  # mode 0700
    os.environ[_MULTIPROC_DIR] = path
    _choose_value_class()
    hup = getattr(server, "handle_hup", None)
    if hup is not None:
        # gunicorn's master finds its signal handlers by name on itself (handle_hup).
        server.handle_hup = lambda: _checked_reload(server, hup)


def _checked_reload(server: Any, reload: Any) -> None:
    """SIGHUP: reload as gunicorn does, unless a new worker could not start.

    gunicorn retires the old workers as soon as it has forked the new ones, and a new
    worker that cannot build its app (a mistake in the config file, an upgrade gone
    wrong) makes the master stop the whole server: a reload meant to change one key took
    the service down until someone fixed the file and started it again.
    """
    problem = reload_refusal(server)
    if problem is None:
        reload()
        return
    _log(
        server,
        "error",
        f"reload refused, the running workers keep serving: {problem}. "
        "Fix it, then reload again (srcore config check shows every problem of the file)",
    )


def reload_refusal(server: Any, *, timeout: float | None = None) -> str | None:
    """Why workers forked now would fail to start, or ``None`` if one did start.

    A child forked from the master builds the app exactly as a new worker will (same
    modules, the config file and code as they are on disk now), says on a pipe whether
    it could, and exits without serving. *timeout* defaults to gunicorn's worker timeout.
    """
    limit = float(timeout if timeout is not None else getattr(server.cfg, "timeout", 30) or 30)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, which leaves by os._exit
        status = 1
        try:
            os.close(read_end)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            server.app.wsgi()
            os.write(write_end, b"ok")
            status = 0
        except BaseException as exc:  # reported to the master; the child exits anyway
            lines = "".join(traceback.format_exception_only(exc)).strip().splitlines()
            reason = "; ".join(line.strip() for line in lines if line.strip())
            os.write(write_end, reason.encode("utf-8", "replace")[:4000])
        finally:
            os._exit(status)
    os.close(write_end)
    answer = b""
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                answer = f"a new worker did not start within {limit:g} s".encode()
                break
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            answer += chunk
    finally:
        os.close(read_end)
        _reap(pid)
    if answer == b"ok":
        return None
    return answer.decode("utf-8", "replace") or "a new worker died while it started"


def _reap(pid: int) -> None:
    """Collect the checking child (the master's loop would otherwise take it for a worker
    it does not know, and log it)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.02)


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


def post_worker_init(worker: Any) -> None:
    """The worker has built its app: keep what that made out of the collector's scans.

    A service's app leaves some 100,000 objects that live as long as the worker; the
    worker's first full collection (within its first thousand or so requests) scanned
    them all, about 80 ms of CPU taken from a request, and every later one again.
    Frozen (:func:`gc.freeze`), they are never scanned.
    """
    import gc

    gc.collect()
    gc.freeze()


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
