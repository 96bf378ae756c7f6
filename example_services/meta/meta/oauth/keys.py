"""Token-signing keys: kept in meta's database, created on first need, rotated on demand.

There is one signing key per algorithm at a time: Ed25519 (``EdDSA``) signs access tokens
and the ID tokens of clients that ask for it; RSA (``RS256``, 2048 bits) signs the other ID
tokens and logout tokens, since many OpenID Connect libraries verify nothing else.

A key is published before it signs. The JWKS is served ``Cache-Control: public,
max-age=JWKS_MAX_AGE``, so a client or an HTTP cache may answer from a copy that old: a
rotation publishes the new keys at once and leaves the current ones signing for
:data:`PUBLISHED_BEFORE_SIGNING` (that max-age and a margin), by setting their
``retired_at`` to the moment they stop; a copy of the JWKS within its max-age then has
every key a token it meets was signed with. Only keys that nothing cached can miss sign at
once: the very first key of an algorithm, and the keys of an emergency rotation
(``--at-once``, a leaked key), whose tokens a stale copy cannot verify until it is fetched
again. A retired key stays in the published JWKS until every token it signed has expired:
access and ID tokens live their lifetime after the key's retirement at most, personal
access tokens record their key's ``kid`` and keep it published while they are valid.
Rotate with ``python -m meta.oauth.keys rotate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from meta.oauth.models import PersonalAccessToken, SigningKey
from srcore.db import as_utc, utcnow

if TYPE_CHECKING:
    from joserfc.jwk import KeySet, OKPKey, RSAKey

    from srcore.db import Database

__all__ = [
    "JWKS_MAX_AGE",
    "PUBLISHED_BEFORE_SIGNING",
    "DatabaseKeySource",
    "KeyRing",
    "main",
    "published_keys",
    "rotate",
]

#: A margin, in seconds, around a key's turn to sign: a retired key stays published twice
#: this much longer than the token lifetime, and a rotated-in key is published this much
#: longer before it signs (:data:`PUBLISHED_BEFORE_SIGNING`). No process signs past its
#: key's retirement: each asks the database which key signs at every signature.
SIGNING_KEY_TTL = 60.0
#: The ``max-age`` (seconds) the JWKS is served with: how long a client or an HTTP cache
#: may use its copy without asking meta again.
JWKS_MAX_AGE = 300
#: How long a rotated-in key is published before it signs: past every copy of the JWKS
#: made before it appeared, with a margin for the clocks of meta's hosts and a slow answer
#: (its ``Date`` is stamped after the document was read).
PUBLISHED_BEFORE_SIGNING = timedelta(seconds=JWKS_MAX_AGE + SIGNING_KEY_TTL)
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


def _create(session: Session, alg: str, now: datetime) -> SigningKey:
    from srcore.auth import jose

    if alg == "RS256":
        from joserfc.jwk import RSAKey

        key: OKPKey | RSAKey = RSAKey.generate_key(RSA_BITS, auto_kid=True)
    elif alg == ACCESS_ALG:
        key = jose.generate_key()
    else:
        raise ValueError(f"meta signs with {', '.join(ALGORITHMS)}, not {alg}")
    row = SigningKey(
        kid=key.kid, private_jwk=json.dumps(key.as_dict(private=True)), alg=alg, created=now
    )
    session.add(row)
    session.flush()
    return row


def _live(alg: str, now: datetime) -> Any:
    """The keys of *alg* that sign now or will, in the order they sign: those retiring at
    a set moment first (the earliest signs now), then the unretired ones, newest first."""
    return (
        select(SigningKey)
        .where(
            SigningKey.alg == alg,
            or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now),
        )
        .order_by(SigningKey.retired_at.is_(None), SigningKey.retired_at, SigningKey.created.desc())
    )


def rotate(session: Session, *, now: datetime, at_once: bool = False) -> list[SigningKey]:
    """Make a new key of each algorithm, published from *now*; the caller commits.

    The keys signing now go on signing until the new ones have been published for
    :data:`PUBLISHED_BEFORE_SIGNING`, then retire. With *at_once* (a leaked key) they
    retire now and the new keys sign at once: a client holding a copy of the JWKS from
    before cannot verify the new tokens until it fetches the JWKS again.
    Returns the new keys, the access tokens' first."""
    until = now if at_once else now + PUBLISHED_BEFORE_SIGNING
    for alg in ALGORITHMS:
        for row in list(session.scalars(_live(alg, now))):
            # A key already retiring at a set moment keeps it: it signs before the
            # unretired one that this rotation retires in its turn.
            if row.retired_at is None or row.retired_at > until:
                row.retired_at = until
    return [_create(session, alg, now) for alg in ALGORITHMS]


def signs_from(session: Session, row: SigningKey, now: datetime) -> datetime | None:
    """When *row* starts signing (*now* or earlier for the one signing now), or None for a
    key that signs no more."""
    start = now
    for live in session.scalars(_live(row.alg, now)):
        if live.kid == row.kid:
            return start
        if live.retired_at is None:
            break
        start = as_utc(live.retired_at)
    return None


def published_keys(
    session: Session, *, token_lifetime: timedelta, now: datetime | None = None
) -> list[SigningKey]:
    """The keys whose signatures may be valid: those that sign now or will (published
    before they sign), and those retired less than *token_lifetime* ago or with a live
    personal access token."""
    now = utcnow() if now is None else now
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
    """The process's view of the signing keys of one database.

    Which key signs is asked of the database at every signature (one small query), so a
    rotation made anywhere (``rotate --at-once`` by the command, or by another process or
    host of meta) holds in every process from the next token on; only the parsed private
    key is kept, by its kid.

    *token_lifetime* is the access tokens'; a retired key stays published for the longer
    of it and the ID tokens'. *clock* gives the current time (aware, UTC): a key's turn to
    sign and its retirement are read from it.
    """

    def __init__(
        self,
        db: Database,
        *,
        token_lifetime: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        from meta.oauth.oidc import ID_TOKEN_LIFETIME

        self.db = db
        self.token_lifetime = max(token_lifetime, timedelta(seconds=ID_TOKEN_LIFETIME))
        self.clock = clock
        self._lock = threading.Lock()
        #: Per algorithm: the kid of the key signing last, and that key parsed.
        self._signing: dict[str, tuple[str, OKPKey | RSAKey]] = {}

    def rotate(self, *, at_once: bool = False) -> list[tuple[str, str, datetime | None]]:
        """:func:`rotate` now; the new keys as (kid, alg, when it signs from: None for
        at once)."""
        now = self.clock()
        with self.db.transaction() as session:
            rows = rotate(session, now=now, at_once=at_once)
            made = []
            for row in rows:
                # Keys of an algorithm that had none sign at once, as on a first start.
                start = signs_from(session, row, now)
                made.append((row.kid, row.alg, start if start and start > now else None))
        self.forget()
        return made

    def signing_key(self) -> OKPKey:
        """The Ed25519 key to sign access tokens with now; the first call on an empty
        database creates one."""
        return cast("OKPKey", self.signing_key_for(ACCESS_ALG))

    def signing_key_for(self, alg: str) -> OKPKey | RSAKey:
        """The current key of *alg* (``EdDSA`` or ``RS256``), created on first need."""
        if alg not in ALGORITHMS:
            raise ValueError(f"meta signs with {', '.join(ALGORITHMS)}, not {alg}")
        with self._lock:
            now = self.clock()
            cached = self._signing.get(alg)
            if cached is not None:
                # The key whose turn it is now: another process's rotation (at once, for
                # a leaked key) retires the one this process parsed.
                with self.db.transaction() as session:
                    current = session.scalars(
                        _live(alg, now).with_only_columns(SigningKey.kid).limit(1)
                    ).first()
                if current == cached[0]:
                    return cached[1]
            kid, key = self._load_or_create(alg, now)
            self._signing[alg] = (kid, key)
            return key

    def forget(self) -> None:
        with self._lock:
            self._signing.clear()

    def _load_or_create(self, alg: str, now: datetime) -> tuple[str, OKPKey | RSAKey]:
        """The key whose turn it is, with its kid; with none at all, a new one that signs at
        once: no copy of the JWKS can be missing a key of an algorithm meta never signed
        with."""
        with self.db.transaction() as session:
            row = session.scalars(_live(alg, now).limit(1)).first()
            if row is None:
                row = _create(session, alg, now)
            return row.kid, _import_any(row)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document, creating the first keys if there are none yet."""
        for alg in ALGORITHMS:
            self.signing_key_for(alg)
        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime, now=self.clock())
            # The access tokens' keys first, newest first: what a service looks for.
            rows.sort(key=lambda row: row.alg != ACCESS_ALG)
            return {"keys": [public_jwk(row) for row in rows]}

    def key_set(self) -> KeySet:
        """The Ed25519 keys that may have signed a valid access token."""
        from joserfc.jwk import KeySet

        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime, now=self.clock())
            return KeySet([_import(row) for row in rows if row.alg == ACCESS_ALG])

    def id_token_key_set(self) -> KeySet:
        """Every published key: what may have signed an ID token meta gave out."""
        from joserfc.jwk import KeySet

        with self.db.transaction() as session:
            rows = published_keys(session, token_lifetime=self.token_lifetime, now=self.clock())
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
    """``python -m meta.oauth.keys rotate [--at-once]|list --config PATH``."""
    parser = argparse.ArgumentParser(prog="python -m meta.oauth.keys", description=__doc__)
    parser.add_argument("command", choices=("rotate", "list"))
    parser.add_argument("--config", help="the network's config file (default: the usual lookup)")
    parser.add_argument(
        "--at-once",
        action="store_true",
        help=(
            "rotate: sign with the new keys at once (a leaked key); clients holding a copy "
            f"of the JWKS up to {JWKS_MAX_AGE} s old cannot verify the new tokens until "
            "they fetch it again"
        ),
    )
    args = parser.parse_args(argv)

    import meta

    app = meta.create_app(config=args.config)
    st = app.extensions["srcore"]
    ring: KeyRing = app.extensions["meta.oauth"].ring
    if args.command == "rotate":
        made = ring.rotate(at_once=args.at_once)
        for kid, alg, start in made:
            when = "now" if start is None else f"from {_iso(start)}"
            print(f"new signing key {kid} ({alg}): published now, signs {when}")
        if args.at_once:
            print(
                "the new keys sign at once: a client or HTTP cache holding the JWKS from "
                f"before (up to {JWKS_MAX_AGE} s) refuses their tokens until it fetches it "
                "again"
            )
        elif any(start is not None for _, _, start in made):
            print("the current keys sign until then")
        print("retired keys stay published until their tokens expire")
        return 0
    now = ring.clock()
    with st.db.transaction() as session:
        rows = list(session.scalars(select(SigningKey).order_by(SigningKey.created)))
        if not rows:
            print("no signing keys yet: meta makes them when it first signs a token")
        for row in rows:
            start = signs_from(session, row, now)
            if start is None and row.retired_at is None:
                state = "published, not signing"  # an older one made beside the current
            elif start is None:
                state = f"retired {_iso(row.retired_at or now)}"
            elif start > now:
                state = f"published, signs from {_iso(start)}"
            else:
                state = "current"
            if start is not None and row.retired_at is not None:
                state += f", signs until {_iso(row.retired_at)}"
            print(f"{row.kid}  {row.alg}  created {_iso(row.created)}  {state}")
    return 0


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
