"""Two-factor sign-in as an authenticator app sees it: codes computed from RFC 6238 with the
standard library alone (not the library meta uses), and the ``otpauth://`` key URI read as
the Key URI Format says an app reads it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from srcore.testing import log_in_client

TWO_FACTOR = "/security/two-factor"


def hotp(key: bytes, counter: int, digits: int = 6) -> str:
    """RFC 4226: HMAC-SHA-1 of the counter, dynamically truncated."""
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def totp_code(secret_b32: str, at: float, step: int = 30) -> str:
    """RFC 6238 with its defaults (SHA-1, 6 digits, 30 s steps from the epoch)."""
    padded = secret_b32 + "=" * (-len(secret_b32) % 8)
    return hotp(base64.b32decode(padded, casefold=True), int(at // step))


def test_the_rfc_6238_reference_vector_holds_for_this_implementation() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 in 8 digits.
    key = b"12345678901234567890"
    assert hotp(key, 59 // 30, digits=8) == "94287082"
    assert totp_code(base64.b32encode(key).decode(), 59) == "287082"


def read_key_uri(uri: str) -> dict[str, str]:
    """The parts an app takes from a key URI: type, issuer and account from the label (split
    at its one colon), and the parameters. Neither issuer nor account may hold a colon."""
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp", uri
    label = unquote(parts.path.lstrip("/"))
    assert label.count(":") == 1, f"the label must hold exactly one colon: {label!r}"
    issuer, account = label.split(":")
    params = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    assert ":" not in params["issuer"], params
    return {"label_issuer": issuer, "account": account.strip(), **params}


def csrf_post(client: Any, path: str, data: dict[str, str]) -> Any:
    page = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, path
    return client.post(path, data={**data, "csrf_token": token.group(1)})


def test_an_issuer_with_colons_reads_as_one_issuer_in_the_key_uri() -> None:
    from meta.totp import provisioning_uri

    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    uri = provisioning_uri(secret, account="alice", issuer="Acme: Code & Tickets / EU")
    key = read_key_uri(uri)
    assert key["label_issuer"] == key["issuer"] == "Acme Code & Tickets / EU"
    assert key["account"] == "alice" and key["secret"] == secret


def test_the_codes_of_an_rfc_6238_app_turn_it_on_and_log_in_once(
    app: Any, accounts: Any, password: str
) -> None:
    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    page = client.get(TWO_FACTOR).get_data(as_text=True)
    shown = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page)
    assert shown
    secret = shown.group(1).replace(" ", "")
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)  # 160 bits, as apps expect

    now = time.time()
    turned_on = csrf_post(
        client, TWO_FACTOR, {"code": totp_code(secret, now), "current_password": password}
    )
    assert turned_on.status_code == 200, turned_on.get_data(as_text=True)[:500]
    assert "recovery-codes" in turned_on.get_data(as_text=True)

    # A new login: the app's code for the next step (clocks drift) completes it, once.
    fresh = app.test_client()
    first = csrf_post(fresh, "/login", {"login": "alice", "password": password})
    assert first.status_code == 302 and first.headers["Location"] == "/login/verify"
    code = totp_code(secret, now + 30)
    done = csrf_post(fresh, "/login/verify", {"code": code[:3] + " " + code[3:]})
    assert done.status_code == 302 and fresh.get("/profile").status_code == 200
    again = app.test_client()
    csrf_post(again, "/login", {"login": "alice", "password": password})
    assert csrf_post(again, "/login/verify", {"code": code}).status_code == 400
    # Three steps away is too far either side.
    for far in (now - 90, now + 90):
        refused = csrf_post(again, "/login/verify", {"code": totp_code(secret, far)})
        assert refused.status_code == 400
    assert again.get("/profile").status_code == 302
