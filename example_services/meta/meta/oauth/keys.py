"""Token-signing keys: kept in meta's database, created on first need, rotated on demand.

There is one current key per algorithm: Ed25519 (``EdDSA``) signs access tokens and the
ID tokens of clients that ask for it; RSA (``RS256``, 2048 bits) signs the other ID tokens
and logout tokens, since many OpenID Connect libraries verify nothing else. The newest
unretired key of an algorithm signs. A retired key stays in the published JWKS until every
token it signed has expired: access tokens live ``access-token-lifetime`` after the key's
retirement at most, personal access tokens record their key's ``kid`` and keep it
published while they are valid. Rotate with ``python -m meta.oauth.keys rotate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from meta.oauth.models import PersonalAccessToken, SigningKey
from srcore.db import utcnow

if TYPE_CHECKING:
    from joserfc.jwk import KeySet, OKPKey, RSAKey

    from srcore.db import Database

__all__ = ["DatabaseKeySource", "KeyRing", "main", "published_keys", "rotate"]

#: How long a process keeps signing with the key it loaded before looking again; a
#: retired key stays published this much longer than the token lifetime.
SIGNING_KEY_TTL = 60.0
#: The algorithm of access tokens (and of the keys srcore's services verify).
ACCESS_ALG = "EdDSA"
#: Every algorithm meta signs with, each with its own current key.
ALGORITHMS = ("EdDSA", "RS256")
RSA_BITS = 2048


def _import(row: SigningKey) -> OKPKey:
    from joserfc.jwk import OKPKey

    return OKPKey.import_key(json.loads(row.private_jwk))


def _import_any(row: SigningKey) -> OKPKey | RSAKey:
    from joserfc.jwk import RSAKey

    if row.alg == "RS256":
        return RSAKey.import_key(json.loads(row.private_jwk))
    return _import(row)


def _create(session: Session, alg: str = ACCESS_ALG) -> SigningKey:
    from srcore.auth import jose

    if alg == "RS256":
        from joserfc.jwk import RSAKey

        key: OKPKey | RSAKey = RSAKey.generate_key(RSA_BITS, auto_kid=True)
    elif alg == ACCESS_ALG:
        key = jose.generate_key()
    else:
        raise ValueError(f"meta signs with {', '.join(ALGORITHMS)}, not {alg}")
    row = SigningKey(kid=key.kid, private_jwk=json.dumps(key.as_dict(private=True)), alg=alg)
    session.add(row)
    session.flush()
    return row


def rotate(session: Session) -> SigningKey:
    """Retire every current key and create a new Ed25519 one; the caller commits.

    The RSA key of ID tokens is made again on its first need."""
    now = utcnow()
    for row in session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
        row.retired_at = now
    return _create(session)


def published_keys(session: Session, *, token_lifetime: timedelta) -> list[SigningKey]:
    """The keys whose signatures may still be valid: current ones and recently retired."""
    now = utcnow()
    horizon = now - token_lifetime - timedelta(seconds=SIGNING_KEY_TTL * 2)
    # Asked of each key (a few), through the tokens' (kid, expires_at) index: an IN over
    # the live tokens read every one of them, for every fetch of the keys. Not as EXISTS
    # either: PostgreSQL's default plan of one, expecting a key's many live tokens to turn
    # up early, read the token table in order, and all of it for a key with none. The
    # first live token in expiry order is one only the index gives without a sort.
    first_live = (
        select(PersonalAccessToken.expires_at)
        .where(
            PersonalAccessToken.kid == SigningKey.kid,
            PersonalAccessToken.expires_at > now,
            PersonalAccessToken.revoked_at.is_(None),
        )
        .order_by(PersonalAccessToken.expires_at)
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(SigningKey)
        .where(
            or_(
                SigningKey.retired_at.is_(None),
                SigningKey.retired_at > horizon,
                first_live.is_not(None),
            )
        )
        .order_by(SigningKey.created.desc())
    )
    return list(session.scalars(query))


def public_jwk(row: SigningKey) -> dict[str, Any]:
    data: dict[str, Any] = _import_any(row).as_dict(private=False)
    data.update(alg=row.alg, use="sig")
    return data


class KeyRing:
    """The process's view of the signing keys of one database, cached briefly."""

    def __init__(self, db: Database, *, token_lifetime: timedelta) -> None:
        self.db = db
        self.token_lifetime = token_lifetime
        self._lock = threading.Lock()
        self._signing: dict[str, tuple[float, OKPKey | RSAKey]] = {}

    def signing_key(self) -> OKPKey:
        """The Ed25519 key to sign access tokens with now; the first call on an empty
        database creates one."""
        return cast("OKPKey", self.signing_key_for(ACCESS_ALG))

    def signing_key_for(self, alg: str) -> OKPKey | RSAKey:
        """The current key of *alg* (``EdDSA`` or ``RS256``), created on first need."""
        if alg not in ALGORITHMS:
            raise ValueError(f"meta signs with {', '.join(ALGORITHMS)}, not {alg}")
        with self._lock:
            cached = self._signing.get(alg)
            if cached is not None and time.monotonic() - cached[0] < SIGNING_KEY_TTL:
                return cached[1]
            key = self._load_or_create(alg)
            self._signing[alg] = (time.monotonic(), key)
            return key

    def forget(self) -> None:
        with self._lock:
            self._signing.clear()

    def _load_or_create(self, alg: str) -> OKPKey | RSAKey:
        with self.db.transaction() as session:
            row = session.scalars(
                select(SigningKey)
                .where(SigningKey.retired_at.is_(None), SigningKey.alg == alg)
                .order_by(SigningKey.created.desc())
                .limit(1)
            ).first()
            if row is None:
                row = _create(session, alg)
            return _import_any(row)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document, creating the first keys if there are none yet."""
        for alg in ALGORITHMS:
            self.signing_key_for(alg)
        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime)
            # The access tokens' keys first, newest first: what a service looks for.
            rows.sort(key=lambda row: row.alg != ACCESS_ALG)
            return {"keys": [public_jwk(row) for row in rows]}

    def key_set(self) -> KeySet:
        """The Ed25519 keys that may have signed a valid access token."""
        from joserfc.jwk import KeySet

        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime)
            return KeySet([_import(row) for row in rows if row.alg == ACCESS_ALG])

    def id_token_key_set(self) -> KeySet:
        """Every published key: what may have signed an ID token meta gave out."""
        from joserfc.jwk import KeySet

        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime)
            return KeySet([_import_any(row) for row in rows])


class DatabaseKeySource:
    """A :class:`srcore.auth.tokens.KeySource` over meta's own keys, for its own API.

    It reads the database once, then again only when a token names a kid it has not
    seen (at most once a second, so made-up kids cannot hammer the database).
    """

    def __init__(self, ring: KeyRing, *, clock: Any = time.monotonic) -> None:
        self.ring = ring
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._kids: frozenset[str] = frozenset()
        self._loaded = float("-inf")

    def key_set(self, kid: str | None) -> KeySet:
        with self._lock:
            stale = self._keys is None or (kid is not None and kid not in self._kids)
            if stale and self.clock() - self._loaded >= 1.0:
                keys = self.ring.key_set()
                self._keys = keys
                self._kids = frozenset(k.kid for k in keys.keys if k.kid)
                self._loaded = self.clock()
            assert self._keys is not None
            return self._keys


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m meta.oauth.keys rotate|list --config PATH``."""
    parser = argparse.ArgumentParser(prog="python -m meta.oauth.keys", description=__doc__)
    parser.add_argument("command", choices=("rotate", "list"))
    parser.add_argument("--config", help="the network's config file (default: the usual lookup)")
    args = parser.parse_args(argv)

    import meta

    app = meta.create_app(config=args.config)
    st = app.extensions["srcore"]
    if args.command == "rotate":
        with st.db.transaction() as session:
            row = rotate(session)
            kid = row.kid
        print(f"new signing key {kid}; retired keys stay published until their tokens expire")
        return 0
    with st.db.transaction() as session:
        for row in session.scalars(select(SigningKey).order_by(SigningKey.created)):
            state = "current" if row.retired_at is None else f"retired {_iso(row.retired_at)}"
            print(f"{row.kid}  {row.alg}  created {_iso(row.created)}  {state}")
    return 0


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
