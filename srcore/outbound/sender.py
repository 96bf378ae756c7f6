"""The one way requests leave a service for a URL someone else chose: :class:`Sender`.

``Sender.post(url, headers, body, deadline=...)`` sends one POST and returns an
:class:`Exchange`, what came back or what went wrong; callers talk to this interface only,
so tests hand them a fake. :class:`PooledSender`, the real one, keeps a thread-safe urllib3
pool of keep-alive connections with the SSRF policy inside:

- a new connection checks the port it is for, resolves the name once, checks *every*
  address it got, and connects to a checked one only: a refused target never sees a TCP
  connection, and a name that answers differently for the check and the connection (DNS
  rebinding) gains nothing;
  TLS still verifies the certificate for the name;
- the attempt has one deadline for lookup, connect, send and read together: a watchdog
  shuts the socket at the deadline, so a receiver trickling bytes cannot hold it longer;
- informational (1xx) answers are read past, each under the caps of a response head, to
  the final answer, which is the one recorded; a 101 (switching protocols) is a failure
  and its connection is never used again;
- redirects are not followed; response bodies are capped and kept as sent (compressed,
  if the receiver compressed though asked for ``identity``: no inflating a bomb), and a
  negative chunk size is an error, not "read until the receiver stops";
- what an error quotes of a receiver's bytes is cut and escaped, here and in urllib3's log.
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import logging
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3
from urllib3 import exceptions as e
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import HTTPResponse
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from srcore.forks import reset_in_child
from srcore.outbound.policy import AddressPolicy, RefusedAddress

__all__ = ["BODY_CAP", "Exchange", "PooledSender", "Sender", "resolve"]

log = logging.getLogger("srcore.outbound")

#: Response bodies are read up to this many bytes.
BODY_CAP = 16 * 1024
#: A response head's line is read up to this many bytes, and a head has at most this many
#: header lines: http.client's caps for the final head, applied to each informational one.
HEAD_LINE_CAP = 65536
HEAD_LINES_CAP = 100
#: An error's text is cut to this many characters: it may quote a receiver's bytes, and
#: callers store and log it.
ERROR_CAP = 500


@dataclass
class Exchange:
    """What one POST got: a status, (capped) headers and body, or an error."""

    status: int | None = None
    headers: Mapping[str, str] | None = None
    body: bytes = b""
    error: str | None = None
    #: The policy refused the target: nothing was sent, and retrying cannot help.
    refused: bool = False


class Sender(Protocol):
    """Sends requests to outside URLs; thread-safe."""

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, deadline: float
    ) -> Exchange:
        """POST *body* to *url*; give up at *deadline* (a :func:`time.monotonic` value)."""
        ...

    def close(self) -> None:
        """Close pooled connections and stop background threads."""
        ...


class _Attempt:
    """One POST in flight: its deadline and the connection the watchdog may cut."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._conn: HTTPConnection | None = None
        self._raw: socket.socket | None = None
        self.expired = False
        self.done = False

    def track(self, conn: HTTPConnection, raw: socket.socket | None = None) -> None:
        """Remember *conn* (and its new socket); refuse to go on past the deadline."""
        with self._lock:
            self._conn = conn
            if raw is not None:
                self._raw = raw
            expired = self.expired
        if expired:
            if raw is not None:
                raw.close()
            raise e.ConnectTimeoutError(conn, "the deadline passed")

    def expire(self) -> None:
        """Called by the watchdog at the deadline: shut the connection's socket down."""
        with self._lock:
            if self.done:
                return
            self.expired = True
            socks = [s for s in (getattr(self._conn, "sock", None), self._raw) if s is not None]
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
            break

    def finish(self) -> bool:
        """Mark the attempt over; whether the deadline had cut it first."""
        with self._lock:
            self.done = True
            return self.expired


class _Watchdog:
    """One thread that expires attempts at their deadlines (started on first use)."""

    def __init__(self) -> None:
        self._reset()
        reset_in_child(self._reset)  # a forked child has none of the parent's threads

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, attempt: _Attempt) -> None:
        with self._cond:
            heapq.heappush(self._heap, (attempt.deadline, next(self._seq), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(
                    target=self._run, name="srcore-outbound-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is attempt:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, attempt = heapq.heappop(self._heap)
                    if not attempt.done:
                        attempt.expire()
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


_AddrInfo = list[tuple[Any, Any, int, str, Any]]


def resolve(host: str, port: int, deadline: float | None) -> _AddrInfo:
    """``getaddrinfo`` for *host*, given up (TimeoutError) at *deadline*: the lookup runs
    on a daemon thread, left behind then, as the system resolver cannot be interrupted."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        deadline = None
    if deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[_AddrInfo | BaseException] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting thread
            found.append(exc)

    thread = threading.Thread(target=lookup, name="srcore-outbound-resolve", daemon=True)
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0))
    if not found:
        raise TimeoutError(f"looking up {host} took too long")
    result = found[0]
    if isinstance(result, BaseException):
        raise result
    return result


class _FinalResponse(http.client.HTTPResponse):
    """http.client's response, read up to the final answer (RFC 9110, section 15.2).

    http.client reads past ``100 Continue`` only: any other informational answer, like
    ``103 Early Hints``, was taken for the final one, and the final one left on the kept-alive
    connection was read as the answer to the next request sent on it. Here each
    informational answer is read (its head under the caps of any response head, nothing of
    it kept) and dropped, however many come: an endless stream of them is cut by the
    attempt's deadline, which shuts the socket. A ``101 Switching Protocols`` ends the
    exchange (a POST asked for no upgrade) and the connection with it.
    """

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            self._skip_head()

    def _skip_head(self) -> None:
        """Read an informational answer's header lines, up to the blank line ending them."""
        for _ in range(HEAD_LINES_CAP + 1):
            line = self.fp.readline(HEAD_LINE_CAP + 1)
            if len(line) > HEAD_LINE_CAP:
                raise http.client.LineTooLong("header line of an informational response")
            if line in (b"\r\n", b"\n", b""):  # b"": closed, which reading the status says
                return
        raise http.client.HTTPException(
            f"got more than {HEAD_LINES_CAP} headers in an informational response"
        )

    def begin(self) -> None:
        super().begin()
        if self.status == 101:
            self.will_close = True  # what follows is another protocol's: never reused


class _PinnedMixin:
    """A connection that resolves, checks every address, then connects to one of them."""

    policy: AddressPolicy | None = None
    response_class: type[http.client.HTTPResponse] = _FinalResponse
    attempts: threading.local

    host: str
    port: int
    timeout: Any
    source_address: tuple[str, int] | None
    socket_options: Any

    def _attempt(self) -> _Attempt | None:
        attempt: _Attempt | None = getattr(self.attempts, "current", None)
        return attempt

    def _new_conn(self) -> socket.socket:
        host = self.host.strip("[]")
        # The port urllib3 read from the URL, which a URL's own check may have read otherwise.
        if self.policy is not None and not self.policy.ports.allows(self.port):
            raise RefusedAddress(f"port {self.port}", f"not one of {self.policy.ports_setting}")
        attempt = self._attempt()
        try:
            infos = resolve(host, self.port, attempt.deadline if attempt is not None else None)
        except (socket.gaierror, UnicodeError) as exc:
            raise e.NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise e.ConnectTimeoutError(self, f"looking up {self.host} took too long") from exc
        if self.policy is not None:
            for info in infos:
                address = str(info[4][0])
                reason = self.policy.refusal(address)
                if reason is not None:
                    shown = address if address == host else f"{host} ({address})"
                    raise RefusedAddress(shown, reason)
        last: OSError | None = None
        for family, kind, proto, _name, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.timeout is not _DEFAULT_TIMEOUT:
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                if attempt is not None:
                    attempt.track(self, sock)  # type: ignore[arg-type]
                sock.connect(sockaddr)
            except TimeoutError as exc:
                sock.close()
                raise e.ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except e.ConnectTimeoutError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise e.NewConnectionError(
            self,  # type: ignore[arg-type]
            f"Failed to establish a new connection: {last}",
        ) from last

    def request(self, *args: Any, **kwargs: Any) -> Any:
        attempt = self._attempt()
        if attempt is not None:
            attempt.track(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        response: HTTPResponse = super().getresponse()  # type: ignore[misc]
        response.__class__ = _CheckedResponse  # urllib3 makes its own class, no hook for ours
        return response


class _CheckedResponse(HTTPResponse):
    """urllib3's response, refusing a negative chunk size: it read ``-1`` as "all there is",
    keeping in memory whatever the receiver sent until the deadline (hundreds of MB a
    second), and raised ValueError for other negative sizes, out of :meth:`Sender.post`."""

    def _update_chunk_length(self) -> None:
        super()._update_chunk_length()
        if self.chunk_left is not None and self.chunk_left < 0:
            size, self.chunk_left = self.chunk_left, None
            self.close()
            raise e.InvalidChunkLength(self, str(size).encode())


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        assert nxt is not None
        exc = nxt
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


class PooledSender:
    """The real :class:`Sender`: one urllib3 pool, the SSRF policy (None: trusted, no
    checks), a real deadline; *ca_certs* defaults to certifi's bundle, else the system's.
    Safe to share between threads.
    """

    def __init__(
        self,
        policy: AddressPolicy | None,
        *,
        connect_timeout: float = 5.0,
        body_cap: int = BODY_CAP,
        maxsize: int = 10,
        ca_certs: str | None = None,
    ) -> None:
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.body_cap = body_cap
        self._attempts = threading.local()
        self._watchdog = _Watchdog()
        members = {"policy": policy, "attempts": self._attempts}
        http = type("PinnedHTTPConnection", (_PinnedHTTPConnection,), members)
        https = type("PinnedHTTPSConnection", (_PinnedHTTPSConnection,), members)
        pool_kw: dict[str, Any] = {"maxsize": maxsize, "block": False}
        if ca_certs is not None:
            pool_kw["ca_certs"] = ca_certs
        else:
            try:
                import certifi

                pool_kw["ca_certs"] = certifi.where()
            except ImportError:  # the system's trust store
                pass
        self._pool = urllib3.PoolManager(num_pools=50, retries=False, **pool_kw)
        for name in ("urllib3.connection", "urllib3.connectionpool"):
            logging.getLogger(name).addFilter(_CUT_QUOTES)  # once: the same filter
        self._pool.pool_classes_by_scheme = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, deadline: float
    ) -> Exchange:
        """POST *body* to *url*: refused, failed, timed out at *deadline*, or answered."""
        if self.policy is not None:
            reason = self.policy.url_refusal(url)
            if reason is not None:
                log.warning("target refused: %s", reason)
                return Exchange(error=f"refused: {reason}", refused=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Exchange(error="timeout: the deadline passed before connecting")
        attempt = _Attempt(deadline)
        self._attempts.current = attempt
        self._watchdog.watch(attempt)
        try:
            exchange = self._post(url, headers, body, remaining)
        finally:
            expired = attempt.finish()
            self._attempts.current = None
        # A socket's own timeout may beat the watchdog to it: past the deadline, either is it.
        if expired or (exchange.error is not None and time.monotonic() >= deadline):
            exchange.error = f"timeout: no complete response within {remaining:.3g} s"
        if exchange.error is not None:
            exchange.error = _plain(exchange.error)
        return exchange

    def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, remaining: float
    ) -> Exchange:
        timeout = urllib3.Timeout(connect=min(self.connect_timeout, remaining), read=remaining)
        try:
            response = self._pool.urlopen(
                "POST",
                url,
                body=body,
                headers=dict(headers),
                timeout=timeout,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,  # asked for identity; a bomb stays small
            )
        except RefusedAddress as exc:
            log.warning("target refused: %s", exc)
            return Exchange(error=str(exc), refused=True)
        except e.NewConnectionError as exc:  # before ConnectTimeoutError, its base class
            return Exchange(error=f"connection failed: {_root_cause(exc)}")
        except e.ConnectTimeoutError:
            return Exchange(error="connect timeout")
        except e.ReadTimeoutError:
            return Exchange(error="timeout waiting for the response")
        except (e.ProtocolError, e.SSLError, e.ClosedPoolError, OSError) as exc:
            return Exchange(error=f"connection failed: {_root_cause(exc)}")
        except (e.HTTPError, ValueError) as exc:
            return Exchange(error=f"request failed: {exc}")
        exchange = Exchange(
            status=response.status, headers=_capped(response.headers, self.body_cap)
        )
        complete = False
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.stream(4096):
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.body_cap:
                    break
            else:
                complete = True
            exchange.body = b"".join(chunks)
        except (e.HTTPError, OSError, ValueError) as exc:  # ValueError: urllib3, on odd bytes
            exchange.error = f"reading the response failed: {_root_cause(exc)}"
        finally:
            if not complete or response.status == 101:
                response.close()  # unread data or another protocol: the connection goes
            response.release_conn()
        if response.status == 101 and exchange.error is None:
            exchange.error = "HTTP 101: the receiver switched protocols, not asked for"
        if 300 <= response.status < 400 and exchange.error is None:
            target = response.headers.get("location", "")
            exchange.error = f"redirect to {target[:200]!r} not followed"
        return exchange

    def close(self) -> None:
        """Close the pooled connections and stop the deadline watchdog."""
        self._pool.clear()
        self._watchdog.close()


def _capped(headers: Mapping[str, str], cap: int) -> dict[str, str]:
    """The first of *headers* that fit in *cap* characters: a receiver chooses how many and
    how long (up to 100 lines of 64 KiB), and what is kept may be logged with each attempt."""
    kept: dict[str, str] = {}
    for name in headers:  # a repeated header's values joined, as ``headers[name]`` gives them
        value = headers[name]
        cap -= len(name) + len(value)
        if cap < 0:
            break
        kept[name] = value
    return kept


def _plain(text: str, cap: int = ERROR_CAP) -> str:
    """*text* cut to *cap* characters, those not printable escaped: a receiver's bytes
    quoted in an error cannot fill a log nor write control characters to a terminal."""
    text = text[:cap]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text[:cap]


class _CutQuotes(logging.Filter):
    """urllib3 logs the header lines it could not parse in full, a traceback repeating them:
    a receiver answering 100 lines of 64 KiB put 11 MB in the log per attempt."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > 2 * ERROR_CAP:
            record.msg, record.args = _plain(message, 2 * ERROR_CAP), ()
            record.exc_info = record.exc_text = None
        return True


_CUT_QUOTES = _CutQuotes()
