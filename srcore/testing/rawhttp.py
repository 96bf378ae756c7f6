"""One HTTP exchange of raw bytes, for tests of what no client library would send.

A request past a server's limits (a request line too long, a control byte in a header) is
answered before the server has read it all, and the server's close can reset the
connection while the rest is still being sent: the answer that came is read anyway, and
one the reset lost is asked for again.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

__all__ = ["RawReply", "exchange"]


@dataclass
class RawReply:
    """An answer as it came: its status, headers (names lower-cased; the last of a name
    repeated), every ``Set-Cookie`` and its body."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes


def exchange(port: int, data: bytes, *, tries: int = 3) -> RawReply:
    """Send *data* to 127.0.0.1:*port* on a connection of its own and read the answer."""
    chunks: list[bytes] = []
    for _ in range(tries):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        if chunks:
            break
    assert chunks, f"no answer in {tries} tries"
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    cookies = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
        if name.strip().lower() == "set-cookie":
            cookies.append(value.strip())
    return RawReply(int(lines[0].split()[1]), headers, cookies, body)
