"""JOSE for the network: Ed25519 signatures on access tokens and on meta's pushes.

Tokens are signed with ``alg: EdDSA`` (RFC 8037), which every JOSE library verifies, and
verified as ``EdDSA`` or ``Ed25519`` (RFC 9864's name for the same thing). The keys are
pinned to the Ed25519 curve, so the ambiguity that made RFC 9864 deprecate the name
``EdDSA`` (it also covers Ed448) cannot arise; this module's registry enforces that.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from joserfc.jwk import KeySet, OKPKey
    from joserfc.jws import JWSRegistry
    from joserfc.jwt import Token

__all__ = ["ALGORITHMS", "SIGNING_ALGORITHM", "decode", "generate_key", "registry", "sign"]

#: What a signature may claim to be.
ALGORITHMS = ("EdDSA", "Ed25519")
#: What srcore signs with: the name every JOSE library understands.
SIGNING_ALGORITHM = "EdDSA"


@functools.cache
def registry() -> JWSRegistry:
    """A JWS registry that knows only Ed25519 signatures (built on first use, then shared)."""
    from joserfc.jws import JWSRegistry

    base = JWSRegistry.algorithms["Ed25519"]

    class Ed25519Only(type(base)):  # type: ignore[misc]
        """EdDSA on the Ed25519 curve (checked on every key), under either algorithm name."""

        def __init__(self, name: str) -> None:
            super().__init__("Ed25519")
            self.name = name

    class Registry(JWSRegistry):
        algorithms = {name: Ed25519Only(name) for name in ALGORITHMS}
        recommended = list(ALGORITHMS)

    return Registry(algorithms=list(ALGORITHMS))


def generate_key(kid: str | None = None) -> OKPKey:
    """A new Ed25519 signing key; *kid* defaults to its RFC 7638 thumbprint."""
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519", auto_kid=kid is None)
    if kid is not None:
        key = OKPKey.import_key(key.as_dict(private=True), parameters={"kid": kid})
    return key


def sign(claims: dict[str, Any], key: OKPKey, *, typ: str) -> str:
    """Sign *claims* as a compact JWT with header ``typ`` and the key's ``kid``."""
    from joserfc import jwt

    header = {"alg": SIGNING_ALGORITHM, "typ": typ, "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=[SIGNING_ALGORITHM], registry=registry())


def decode(token: str, keys: KeySet | OKPKey) -> Token:
    """Verify *token*'s signature against *keys*; raises joserfc errors or ValueError."""
    from joserfc import jwt

    return jwt.decode(token, keys, algorithms=list(ALGORITHMS), registry=registry())
