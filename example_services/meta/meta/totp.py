"""Two-factor sign-in with an authenticator app (TOTP, RFC 6238) and recovery codes.

Plain functions over a database session; the pages are in :mod:`meta.twofactor`.

* A code is accepted for the current 30-second step and one step either side (clocks
  drift), and only once: the step of the last accepted code is kept, and a code of that
  step or an earlier one is refused.
* Recovery codes are shown once, when made, and stored as SHA-256 hashes (salted with the
  account id; each code carries 50 random bits, so a fast hash is enough). Each works once;
  making new ones ends the old ones.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from meta.models import RecoveryCode, TotpFactor
from srcore.db import utcnow

__all__ = [
    "RECOVERY_CODES",
    "Check",
    "add_factor",
    "check_code",
    "factor_of",
    "new_recovery_codes",
    "new_secret",
    "provisioning_uri",
    "qr_svg",
    "remove_factors",
    "unused_recovery_codes",
    "verify_totp",
]

#: How many recovery codes are made at once.
RECOVERY_CODES = 10
#: Recovery code characters: lower-case letters and digits that cannot be mistaken for each
#: other (no 0/o, 1/l/i).
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_CODE_LENGTH = 10
#: Steps either side of now whose code is still accepted.
VALID_WINDOW = 1


def new_secret() -> str:
    """A fresh shared secret (160 bits, base32), as authenticator apps expect."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code. Apps split its
    label ``issuer:account`` at the colon, so an issuer's own colons are left out (a site
    named "Acme: Code" would otherwise show as issuer "Acme", account " Code:alice")."""
    issuer = " ".join(issuer.replace(":", " ").split())
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """*uri* as a QR code: an inline SVG element, drawn here (no script, no outside site)."""
    import segno

    code = segno.make(uri, error="m")
    svg: str = code.svg_inline(
        scale=4,
        dark="#000",
        light="#fff",
        border=4,
        omitsize=False,
        title="QR code of the key, for your authenticator app",
    )
    return svg


def _typed(code: str) -> str:
    """*code* as typed, spaces dropped and in NFKC form: an input method set to full-width
    types the digits of 123 as U+FF11 to U+FF13, which is no wrong code (a wrong one counts as
    a failed login)."""
    return "".join(unicodedata.normalize("NFKC", code).split())


def verify_totp(secret: str, code: str, *, last_counter: int | None, now: datetime) -> int | None:
    """The time step *code* belongs to if it is valid and newer than *last_counter*, else None."""
    code = _typed(code)
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for counter in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if last_counter is not None and counter <= last_counter:
            continue
        if hmac.compare_digest(totp.generate_otp(counter), code):
            return counter
    return None


def factor_of(session: Session, user_id: int) -> TotpFactor | None:
    return session.scalar(select(TotpFactor).where(TotpFactor.user_id == user_id))


def add_factor(session: Session, user_id: int, secret: str, counter: int) -> list[str]:
    """Turn TOTP on for *user_id* (the code of step *counter* proved the app has *secret*);
    return its new recovery codes, to show once.

    An account has one app: if it has one already (another tab turned it on a moment
    ago) the flush raises :class:`~sqlalchemy.exc.IntegrityError` rather than replace
    that app and the recovery codes just shown with it."""
    session.add(TotpFactor(user_id=user_id, secret=secret, last_counter=counter))
    session.flush()
    return new_recovery_codes(session, user_id)


def remove_factors(session: Session, user_id: int) -> bool:
    """Turn two-factor sign-in off for *user_id*; return whether it was on."""
    found = factor_of(session, user_id) is not None
    session.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.flush()
    return found


def _normalize(code: str) -> str:
    return "".join(ch for ch in _typed(code).lower() if ch.isalnum())


def _hash(user_id: int, code: str) -> str:
    return hashlib.sha256(f"{user_id}:{_normalize(code)}".encode()).hexdigest()


def _format(raw: str) -> str:
    half = len(raw) // 2
    return f"{raw[:half]}-{raw[half:]}"


def new_recovery_codes(session: Session, user_id: int) -> list[str]:
    """Replace the recovery codes of *user_id*; return the new ones (only hashes are kept)."""
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [
        _format("".join(secrets.choice(_ALPHABET) for _ in range(_CODE_LENGTH)))
        for _ in range(RECOVERY_CODES)
    ]
    session.add_all(RecoveryCode(user_id=user_id, code_hash=_hash(user_id, c)) for c in codes)
    session.flush()
    return codes


def unused_recovery_codes(session: Session, user_id: int) -> int:
    rows: Sequence[RecoveryCode] = session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    ).all()
    return len(rows)


@dataclass(frozen=True)
class Check:
    """What a second-factor code turned out to be: ``otp`` or ``recovery``, or None (wrong)."""

    method: str | None

    @property
    def ok(self) -> bool:
        return self.method is not None


def check_code(session: Session, user_id: int, code: str, *, now: datetime | None = None) -> Check:
    """Check and spend *code*: an authenticator code, or else an unused recovery code.

    A code that works is used up in *session*'s transaction (the step is remembered, the
    recovery code marked used); the caller commits.
    """
    now = now or utcnow()
    factor = factor_of(session, user_id)
    if factor is None or len(code) > 64:
        return Check(None)
    counter = verify_totp(factor.secret, code, last_counter=factor.last_counter, now=now)
    if counter is not None:
        # Conditional, so two requests racing with one code cannot both win.
        spent = session.execute(
            update(TotpFactor)
            .where(
                TotpFactor.id == factor.id,
                or_(TotpFactor.last_counter.is_(None), TotpFactor.last_counter < counter),
            )
            .values(last_counter=counter)
            .execution_options(synchronize_session="fetch")
        )
        return Check("otp" if _count(spent) == 1 else None)
    normalized = _normalize(code)
    if len(normalized) != _CODE_LENGTH:
        return Check(None)
    spent = session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.user_id == user_id,
            RecoveryCode.code_hash == _hash(user_id, normalized),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return Check("recovery" if _count(spent) == 1 else None)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
