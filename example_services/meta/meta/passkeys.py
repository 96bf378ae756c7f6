"""Passkeys (WebAuthn): registering them, and checking their answers when one logs in.

Plain functions over a database session and a :class:`RelyingParty`; the pages are in
:mod:`meta.passkey_views`. The WebAuthn machinery (CBOR, COSE keys, signatures) is
py_webauthn's; what this module decides:

* **Relying party.** Its id is the host of ``[meta] origin`` and the only origin accepted
  is that origin itself: a key made for meta answers nowhere else, and an answer made on
  another page (another port, another scheme) is refused.
* **Challenges** are 32 random bytes, good for :data:`CHALLENGE_SECONDS`, for one purpose
  (register, log in without a password, second factor) and one account. The browser's
  signed session cookie carries the challenge, which binds it to that browser; a row
  holding its hash makes it single-use, since a copy of the cookie could be sent again.
* **Signature counter.** An answer whose counter is not above the one stored is refused
  (unless the authenticator keeps none: both zero), since it may come from a copied key.
* **amr** (RFC 8176), what the session says of how the user proved who they are:
  ``hwk`` for a key bound to one device, ``swk`` for a key that may be synced to others
  (the backup-eligible flag: its private key lives in software somewhere), then ``pin``
  when the authenticator verified the user (a PIN or a biometric: WebAuthn does not say
  which, and ``pin`` is the weaker claim) or else ``user`` (presence only, a touch).
  A password-less login thus says ``hwk pin``; a passkey after the password ``pwd hwk user``.
* A password-less login needs the user verified, which makes it two factors in one (the
  device, and its PIN or biometric): no TOTP code is asked for after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meta.models import PasskeyChallenge, PasskeyCredential, User
from srcore.db import utcnow
from srcore.sqlrows import lock_row

__all__ = [
    "CHALLENGE_SECONDS",
    "NAME_MAX",
    "Assertion",
    "PasskeyError",
    "Purpose",
    "RelyingParty",
    "add_credential",
    "amr",
    "answer_credential_id",
    "authentication_options",
    "count_of",
    "credentials_of",
    "find_credential",
    "new_challenge",
    "registration_options",
    "remove_all",
    "remove_credential",
    "spend_challenge",
    "user_handle",
    "verify_assertion",
    "verify_registration",
]

#: How long a challenge waits for the authenticator's answer.
CHALLENGE_SECONDS = 300
#: The longest name of a passkey.
NAME_MAX = 64
#: A credential id is at most 1023 bytes: 1364 base64url characters.
_ID_MAX = 1400
#: The characters of a credential id as browsers send it: base64url, without padding.
_ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_TIMEOUT_MS = 120_000


class Purpose:
    """What a challenge is for (its row says it, so one cannot stand in for another)."""

    register = "register"
    login = "login"
    second = "second"


class PasskeyError(Exception):
    """An answer that is refused: *message* for the person, *detail* for the audit log."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail[:200]


@dataclass(frozen=True)
class RelyingParty:
    """meta as WebAuthn sees it: the id keys are scoped to, the origin, the name shown."""

    id: str
    origin: str
    name: str

    @classmethod
    def from_origin(cls, origin: str, name: str) -> RelyingParty:
        parts = urlsplit(origin)
        if not parts.scheme or not parts.hostname:
            raise ValueError(f"not an origin: {origin!r}")
        return cls(id=parts.hostname, origin=f"{parts.scheme}://{parts.netloc}", name=name)


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def _b64(data: bytes) -> str:
    from webauthn.helpers import bytes_to_base64url

    return bytes_to_base64url(data)


# -- challenges ------------------------------------------------------------------------


def new_challenge(session: Session, purpose: str, user_id: int | None, *, now: datetime) -> bytes:
    """A fresh challenge for *purpose*, recorded as waiting (expired ones are dropped)."""
    session.execute(delete(PasskeyChallenge).where(PasskeyChallenge.expires < now))
    challenge = secrets.token_bytes(32)
    session.add(
        PasskeyChallenge(
            challenge_hash=_digest(challenge),
            purpose=purpose,
            user_id=user_id,
            expires=now + timedelta(seconds=CHALLENGE_SECONDS),
        )
    )
    session.flush()
    return challenge


def spend_challenge(
    session: Session, challenge: bytes, purpose: str, user_id: int | None, *, now: datetime
) -> bool:
    """Use *challenge* up; False if it was never made, is spent, expired, or is for another
    purpose or account. Conditional, so two requests racing with one cannot both win."""
    condition = [
        PasskeyChallenge.challenge_hash == _digest(challenge),
        PasskeyChallenge.purpose == purpose,
        PasskeyChallenge.expires >= now,
    ]
    if user_id is None:
        condition.append(PasskeyChallenge.user_id.is_(None))
    else:
        condition.append(PasskeyChallenge.user_id == user_id)
    result = session.execute(
        delete(PasskeyChallenge).where(*condition).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


# -- credentials -----------------------------------------------------------------------


def credentials_of(session: Session, user_id: int) -> Sequence[PasskeyCredential]:
    return session.scalars(
        select(PasskeyCredential)
        .where(PasskeyCredential.user_id == user_id)
        .order_by(PasskeyCredential.created, PasskeyCredential.id)
    ).all()


def count_of(session: Session, user_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(PasskeyCredential)
            .where(PasskeyCredential.user_id == user_id)
        )
        or 0
    )


def _is_credential_id(text: object) -> bool:
    """Whether *text* can be a credential id: base64url, at most :data:`_ID_MAX` long.

    An answer's id is whatever its JSON says (a NUL, a lone surrogate): checked here, it
    never reaches a query, which the database would refuse with an error.
    """
    return isinstance(text, str) and len(text) <= _ID_MAX and _ID_CHARS.fullmatch(text) is not None


def find_credential(session: Session, credential_id: str) -> PasskeyCredential | None:
    if not _is_credential_id(credential_id):
        return None
    return session.scalar(
        select(PasskeyCredential).where(PasskeyCredential.credential_id == credential_id)
    )


def remove_credential(session: Session, user_id: int, key_id: int) -> PasskeyCredential | None:
    """Delete passkey *key_id* of *user_id*; return it (None: the account has no such key)."""
    found = session.get(PasskeyCredential, key_id)
    if found is None or found.user_id != user_id:
        return None
    session.delete(found)
    session.flush()
    return found


def remove_all(session: Session, user_id: int) -> int:
    """Delete every passkey of *user_id* (an admin's reset); return how many went."""
    result = session.execute(delete(PasskeyCredential).where(PasskeyCredential.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def user_handle(session: Session, user_id: int) -> str:
    """The account's WebAuthn user handle: the one its passkeys have, or a new random one."""
    existing = session.scalar(
        select(PasskeyCredential.user_handle).where(PasskeyCredential.user_id == user_id).limit(1)
    )
    return existing or _b64(secrets.token_bytes(32))


# -- registering -----------------------------------------------------------------------


def registration_options(
    session: Session,
    rp: RelyingParty,
    *,
    user_id: int,
    username: str,
    handle: str,
    challenge: bytes,
) -> dict[str, Any]:
    """What ``navigator.credentials.create`` is given, as JSON: a discoverable credential,
    the user verified if the authenticator can, and none of the account's keys again."""
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        PublicKeyCredentialDescriptor,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_name=username,
        user_id=base64url_to_bytes(handle),
        user_display_name=username,
        challenge=challenge,
        timeout=_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id))
            for c in credentials_of(session, user_id)
        ],
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


@dataclass(frozen=True)
class Registered:
    """A verified new credential, ready to be stored."""

    credential_id: str
    public_key: bytes
    sign_count: int
    backup_eligible: bool
    transports: str


def _object(answer: object) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise PasskeyError("This is not a passkey's answer.", "not a JSON object")
    return answer


def verify_registration(rp: RelyingParty, answer: object, challenge: bytes) -> Registered:
    """Check the answer of ``navigator.credentials.create`` to *challenge*."""
    from webauthn import verify_registration_response
    from webauthn.helpers.structs import CredentialDeviceType

    credential = _object(answer)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except Exception as exc:  # any malformed or forged part: the answer is refused
        raise PasskeyError(
            "The passkey's answer could not be verified. Try again.", f"registration: {exc}"
        ) from exc
    credential_id = _b64(verified.credential_id)
    if len(credential_id) > _ID_MAX:
        raise PasskeyError("This passkey's id is too long.", "credential id too long")
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    known = {"usb", "nfc", "ble", "internal", "hybrid", "cable", "smart-card"}
    names = [t for t in transports if isinstance(t, str) and t in known] if transports else []
    return Registered(
        credential_id=credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        transports=" ".join(dict.fromkeys(names)),
    )


def add_credential(
    session: Session,
    user_id: int,
    registered: Registered,
    name: str,
    handle: str,
    *,
    most: int | None = None,
) -> PasskeyCredential:
    """Store a verified passkey of *user_id*, made for user handle *handle* (the one its
    options gave); one already registered anywhere, or one past *most* keys, is refused.

    The checks ran when the options were given, minutes before: another tab may have
    added a key since, or (a double click, two tabs with one authenticator) this very
    one, up to the moment of the insert. A :class:`PasskeyError` says which, naming the
    account the key is registered with; after a clash at the insert *session*'s
    transaction is rolled back.
    """
    _refuse_known(session, user_id, registered.credential_id)
    # The account's row, held until the transaction ends: registrations racing each other
    # count one after the other, or each would see room for one more.
    account = session.get(User, user_id)
    if account is None or not lock_row(session, account):
        raise PasskeyError("This account was deleted meanwhile.", "no such account")
    if most is not None and count_of(session, user_id) >= most:
        raise PasskeyError(
            f"An account has at most {most} passkeys: remove one first.", "too many passkeys"
        )
    key = PasskeyCredential(
        user_id=user_id,
        credential_id=registered.credential_id,
        public_key=registered.public_key,
        sign_count=registered.sign_count,
        user_handle=handle,
        name=name[:NAME_MAX],
        transports=registered.transports,
        backup_eligible=registered.backup_eligible,
    )
    session.add(key)
    try:
        session.flush()
    except IntegrityError:
        # The one unique value of the row: another request registered the key meanwhile.
        session.rollback()
        _refuse_known(session, user_id, registered.credential_id)
        raise PasskeyError(
            "This passkey is already registered. Use another one.", "credential id raced"
        ) from None
    return key


def _refuse_known(session: Session, user_id: int, credential_id: str) -> None:
    """Raise a :class:`PasskeyError` naming whose key *credential_id* is, if registered.

    Saying that another account has it tells the holder of the authenticator nothing they
    could not learn by logging in with it.
    """
    found = find_credential(session, credential_id)
    if found is None:
        return
    if found.user_id == user_id:
        raise PasskeyError(
            f"This passkey is already registered with your account, as “{found.name}”.",
            "credential id already known (this account)",
        )
    raise PasskeyError(
        "This passkey is already registered with another account. Remove it there first, "
        "or use another passkey.",
        "credential id already known (another account)",
    )


# -- logging in ------------------------------------------------------------------------


def authentication_options(
    session: Session,
    rp: RelyingParty,
    *,
    challenge: bytes,
    user_id: int | None,
    require_user_verification: bool,
) -> dict[str, Any]:
    """What ``navigator.credentials.get`` is given, as JSON. Without *user_id* (a login
    without a password) no key is listed: the authenticator offers its discoverable ones."""
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers import base64url_to_bytes
    from webauthn.helpers.structs import (
        AuthenticatorTransport,
        PublicKeyCredentialDescriptor,
        UserVerificationRequirement,
    )

    allowed = []
    if user_id is not None:
        for key in credentials_of(session, user_id):
            transports = []
            for name in key.transports.split():
                try:
                    transports.append(AuthenticatorTransport(name))
                except ValueError:
                    continue
            allowed.append(
                PublicKeyCredentialDescriptor(
                    id=base64url_to_bytes(key.credential_id), transports=transports or None
                )
            )
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=_TIMEOUT_MS,
        allow_credentials=allowed,
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if require_user_verification
            else UserVerificationRequirement.PREFERRED
        ),
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def answer_credential_id(answer: object) -> str:
    """The credential id an answer of ``navigator.credentials.get`` names (to find its key)."""
    credential = _object(answer)
    key_id = credential.get("id")
    if not isinstance(key_id, str) or not _is_credential_id(key_id):
        raise PasskeyError("This is not a passkey's answer.", "no credential id")
    return key_id


@dataclass(frozen=True)
class Assertion:
    """A verified answer: whether the user was verified, and the amr it makes."""

    user_verified: bool
    amr: list[str]


def amr(*, user_verified: bool, backup_eligible: bool) -> list[str]:
    """The RFC 8176 method references of a passkey's use (see the module's docstring)."""
    return ["swk" if backup_eligible else "hwk", "pin" if user_verified else "user"]


def verify_assertion(
    session: Session,
    rp: RelyingParty,
    answer: object,
    key: PasskeyCredential,
    challenge: bytes,
    *,
    require_user_verification: bool,
    now: datetime | None = None,
) -> Assertion:
    """Check an answer of ``navigator.credentials.get`` made by *key*; on success the
    key's counter and last use are updated in *session*'s transaction (the caller commits)."""
    from webauthn import verify_authentication_response

    credential = _object(answer)
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, Mapping) else None
    if handle not in (None, "") and handle != key.user_handle:
        raise PasskeyError(
            "The passkey's answer could not be verified. Try again.", "user handle differs"
        )
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=key.public_key,
            # The counter is checked below, where a failure can be told apart.
            credential_current_sign_count=0,
            require_user_verification=require_user_verification,
        )
    except Exception as exc:  # any malformed or forged part: the answer is refused
        raise PasskeyError(
            "The passkey's answer could not be verified. Try again.", str(exc)
        ) from exc
    new = verified.new_sign_count
    if (new > 0 or key.sign_count > 0) and new <= key.sign_count:
        raise PasskeyError(
            "This passkey's counter went backwards: it may have been copied. Use another "
            "way to log in, and remove this passkey.",
            f"signature counter {new} not above {key.sign_count}",
        )
    # Conditional, so two answers racing with one counter value cannot both win.
    spent = session.execute(
        update(PasskeyCredential)
        .where(PasskeyCredential.id == key.id, PasskeyCredential.sign_count == key.sign_count)
        .values(sign_count=new, last_used_at=now or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if int(getattr(spent, "rowcount", 0) or 0) != 1:
        raise PasskeyError(
            "The passkey's answer could not be verified. Try again.", "counter raced"
        )
    return Assertion(
        user_verified=verified.user_verified,
        amr=amr(user_verified=verified.user_verified, backup_eligible=key.backup_eligible),
    )
