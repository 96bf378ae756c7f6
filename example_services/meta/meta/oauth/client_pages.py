"""``/clients``: users register their own (third-party) OAuth applications.

The secret of a confidential client is shown once, on the page that answers the
registration, and stored as a SHA-256 digest. Deleting a client emits a ``client`` event:
every token it holds stops working across the network.
"""

from __future__ import annotations

import secrets
import unicodedata
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from markupsafe import Markup, escape
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from meta.oauth.clients import check_redirect_uri_value
from meta.oauth.models import OAuthClient, digest
from meta.oauth.oidc import ID_TOKEN_ALGORITHMS
from meta.oauth.pats import revoke_client
from srcore.auth import current_user, login_required
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.sqlrows import lock_row
from srcore.validation import Validation

__all__ = [
    "client_pages",
    "mixed_script_problem",
    "reveal_mixed_scripts",
    "script_of",
]

client_pages = Blueprint("oauth_clients", __name__)

MAX_REDIRECT_URIS = 10
#: The most applications one account may have registered at once: the page lists them
#: all, so an account with thousands would make every view of it slow.
MAX_CLIENTS = 50
ALG_OPTIONS = [
    ("RS256", "RS256 (RSA): what every OpenID Connect library verifies"),
    ("EdDSA", "EdDSA (Ed25519): smaller and faster, if your library verifies it"),
]
KIND_OPTIONS = [
    ("confidential", "Confidential: a server that can keep a secret"),
    ("public", "Public: a native or browser app (PKCE, no secret)"),
]


def backchannel_uri_problem(uri: str) -> str | None:
    """Why *uri* cannot be a back-channel logout URI, or None.

    meta POSTs to it from its own network, so it gets the webhooks' SSRF rules (an
    address that is not public only where ``allow-private-webhook-targets`` allows it, an
    allowed port), and https unless it is such an allowed private address. No fragment
    (Back-Channel Logout 2.2).
    """
    from urllib.parse import urlsplit

    from flask import current_app

    from srcore.outbound.targets import problem_for

    if any(c.isspace() or c == "\x00" for c in uri):
        return "The back-channel logout URI may not contain spaces."
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri} is not a valid URL."
    if parts.fragment or "#" in uri:
        return f"{uri} may not have a #fragment."
    problem = problem_for(current_app, uri)
    if problem is not None:
        return f"meta will not send logout tokens to {uri}: {problem}."
    # Plain http only to an address the operator let through above (a lab network).
    if parts.scheme != "https" and not _is_private_literal(parts.hostname or ""):
        return f"{uri} must use https://."
    return None


def _is_private_literal(host: str) -> bool:
    import ipaddress

    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def _letters(text: str) -> str:
    # NFKC first: "Todo" in fullwidth or mathematical letters reads as "Todo" all the same.
    return "".join(c for c in unicodedata.normalize("NFKC", text).casefold() if c.isalnum())


#: Scripts written together within one word (Unicode TR 39's "highly restrictive"
#: level): Japanese, Chinese with Bopomofo and Korean, each with Latin. Any other two
#: scripts in one word (Latin with Cyrillic or Greek above all) make a look-alike.
_SCRIPTS_WRITTEN_TOGETHER = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
#: Name prefixes of letters that belong to no one script (Unicode's Common).
_NO_SCRIPT = ("MODIFIER LETTER", "KATAKANA-HIRAGANA", "DIGIT ")


def script_of(char: str) -> str | None:
    """The script of a letter or digit, as its Unicode name begins (``CYRILLIC SMALL
    LETTER O`` is ``CYRILLIC``, a CJK ideograph ``HAN``), after NFKC (a fullwidth or
    mathematical letter is the letter it stands for); None for what belongs to no one
    script: marks, ASCII digits, punctuation, modifier letters. :mod:`unicodedata` has no
    script property; a letter's name always starts with its script's."""
    scripts = set()
    for part in unicodedata.normalize("NFKC", char):
        category = unicodedata.category(part)
        if not (category.startswith("L") or category == "Nd"):
            continue
        name = unicodedata.name(part, "")
        if name.startswith(("CJK ", "IDEOGRAPHIC ")):
            scripts.add("HAN")
        elif name and not name.startswith(_NO_SCRIPT):
            scripts.add(name.split()[0])
    return scripts.pop() if len(scripts) == 1 else None


def _words(name: str) -> list[str]:
    """The words of *name*: runs of letters, marks, digits and format characters (a
    joiner inside a word does not end it)."""
    words, word = [], ""
    for char in name:
        if unicodedata.category(char)[0] in "LMN" or unicodedata.category(char) == "Cf":
            word += char
        elif word:
            words.append(word)
            word = ""
    return [*words, word] if word else words


def mixed_script_problem(name: str) -> str | None:
    """Why *name* reads as another name, or None: a word that mixes scripts, like "Todo"
    with its first o a Cyrillic one (U+043E) or "Google" with a Greek omicron (U+03BF),
    looks like the Latin name it imitates on the consent page, where the user decides
    whom to trust. Words in different scripts ("Todo" beside a Cyrillic word) and words
    in one script, whichever, are fine."""
    for word in _words(name):
        found = [(char, script) for char in word if (script := script_of(char)) is not None]
        scripts = {script for _char, script in found}
        if len(scripts) < 2 or any(scripts <= allowed for allowed in _SCRIPTS_WRITTEN_TOGETHER):
            continue
        counts = {script: sum(1 for _c, s in found if s == script) for script in scripts}
        # The odd one out: the script with the fewest letters, its first letter named.
        odd = min(scripts, key=lambda script: (counts[script], script))
        char = next(c for c, script in found if script == odd)
        rest = ", ".join(sorted(scripts - {odd})).title()
        return (
            f"{word} mixes scripts in one word: {_codepoint(char)} is {odd.title()}, "
            f"among {rest} letters. Write each word in one script, so the name reads as "
            "what it is."
        )
    return None


def _mixes(word: str) -> bool:
    scripts = {script for char in word if (script := script_of(char)) is not None}
    return len(scripts) > 1 and not any(scripts <= allowed for allowed in _SCRIPTS_WRITTEN_TOGETHER)


def reveal_mixed_scripts(name: str) -> Markup:
    """*name* as HTML, with every character that is not ASCII, in each word that mixes
    scripts, shown as ``<U+…>``: an application registered before such names were
    refused must not read on the consent page as the name it imitates."""
    parts: list[Markup] = []
    word = ""

    def flush() -> None:
        nonlocal word
        if _mixes(word):
            parts.extend(escape(c) if c.isascii() else _revealed(c) for c in word)
        else:
            parts.append(escape(word))
        word = ""

    for char in name:
        category = unicodedata.category(char)
        if category[0] in "LMN" or category == "Cf":
            word += char
            continue
        flush()
        parts.append(escape(char))
    flush()
    return Markup("").join(parts)


def _revealed(char: str) -> Markup:
    return Markup('<span class="hidden-char" title="{}">&lt;U+{}&gt;</span>').format(
        unicodedata.name(char, ""), f"{ord(char):04X}"
    )


def _codepoint(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"


def _first_party_name(name: str) -> bool:
    """Whether *name* reads as the site or one of its services (``Meta``, ``TODO``,
    ``srcore-test network``): the consent page puts an application's name where the user
    decides whom to trust, and the network's own services never ask."""
    from srcore.app import state

    config = state().config
    taken = {_letters(str(config.global_["site-name"])), *map(_letters, config.services)}
    return _letters(name) in taken - {""}


def _mine(user_id: int) -> list[OAuthClient]:
    """The account's applications, newest first: at most :data:`MAX_CLIENTS` (an account
    may hold more from before there was a limit; deleting some shows the rest)."""
    return list(
        db_session.scalars(
            select(OAuthClient)
            .where(OAuthClient.owner_id == user_id, OAuthClient.revoked_at.is_(None))
            .order_by(OAuthClient.created.desc(), OAuthClient.id.desc())
            .limit(MAX_CLIENTS)
        )
    )


def _room_for_one(user: Any) -> bool:
    """Whether *user* may register one more application (it has fewer than
    :data:`MAX_CLIENTS`). The account's row is held from here until the transaction ends,
    so registrations racing each other count one after the other: counted unheld, a burst
    of them each saw room for one more, and all were registered."""
    if not lock_row(db_session, user):
        abort(403, "This account was deleted meanwhile; nothing was saved.")
    query = (
        select(func.count())
        .select_from(OAuthClient)
        .where(OAuthClient.owner_id == user.id, OAuthClient.revoked_at.is_(None))
    )
    return int(db_session.scalar(query) or 0) < MAX_CLIENTS


def _context(*, created: Any = None, secret: str | None = None) -> dict[str, Any]:
    """The applications page's context, but ``valid``."""
    user = current_user._get_current_object()
    return {
        "clients": _mine(user.id),
        "created": created,
        "secret": secret,
        "kind_options": KIND_OPTIONS,
        "alg_options": ALG_OPTIONS,
    }


def _page(*, created: Any = None, secret: str | None = None) -> str:
    context = _context(created=created, secret=secret)
    return render_template("meta/oauth/clients.html", valid=None, **context)


@client_pages.route("/clients")
@login_required
def clients() -> Any:
    return _page()


@client_pages.route("/clients", methods=["POST"])
@login_required
def register_client() -> Any:
    user = current_user._get_current_object()
    # A failed registration shows the page again with the errors (400).
    valid = Validation.form("meta/oauth/clients.html", _context)
    name = valid.require("name", max_length=128, text="name", label="Name")
    mixed = mixed_script_problem(name) if name is not None else None
    if mixed is not None:
        valid.error(mixed, "name")
    elif name is not None and _first_party_name(name):
        valid.error(
            f"{name} is the name of this site or one of its services: an application "
            "registered here is not one of them, and its consent page must not say so.",
            "name",
        )
    uris_text = valid.require("redirect_uris", max_length=6000, label="Redirect URIs")
    kind = valid.require("kind", "enum", choices=("confidential", "public"), label="Kind")
    uris = [line.strip() for line in (uris_text or "").splitlines() if line.strip()]
    if uris_text is not None:
        if len(uris) > MAX_REDIRECT_URIS:
            valid.error(f"Register at most {MAX_REDIRECT_URIS} redirect URIs.", "redirect_uris")
        for uri in uris:
            problem = check_redirect_uri_value(uri)
            if problem is not None:
                valid.error(problem, "redirect_uris")
                break
    alg = valid.optional(
        "id_token_alg", "enum", choices=ID_TOKEN_ALGORITHMS, label="ID token signature"
    )
    logout_text = valid.optional(
        "post_logout_redirect_uris", max_length=6000, label="Post-logout redirect URIs"
    )
    logout_uris = [line.strip() for line in (logout_text or "").splitlines() if line.strip()]
    if len(logout_uris) > MAX_REDIRECT_URIS:
        valid.error(
            f"Register at most {MAX_REDIRECT_URIS} post-logout redirect URIs.",
            "post_logout_redirect_uris",
        )
    for uri in logout_uris:
        problem = check_redirect_uri_value(uri)
        if problem is not None:
            valid.error(problem, "post_logout_redirect_uris")
            break
    backchannel = valid.optional("backchannel_logout_uri", max_length=512, label="URI")
    if backchannel:
        problem = backchannel_uri_problem(backchannel)
        if problem is not None:
            valid.error(problem, "backchannel_logout_uri")
    valid.expect(
        _room_for_one(user),
        f"An account has at most {MAX_CLIENTS} applications: delete one first.",
    )
    valid.raise_if_invalid()
    assert name is not None  # require() recorded an error otherwise
    confidential = kind == "confidential"
    secret = secrets.token_urlsafe(32) if confidential else None
    row = OAuthClient(
        client_id="c" + secrets.token_hex(12),
        owner_id=user.id,
        name=name,
        redirect_uris="\n".join(dict.fromkeys(uris)),
        confidential=confidential,
        secret_hash=digest(secret) if secret else None,
        id_token_alg=alg or "RS256",
        post_logout_redirect_uris="\n".join(dict.fromkeys(logout_uris)),
        backchannel_logout_uri=backchannel or None,
    )
    db_session.add(row)
    db_session.commit()
    return _page(created=row, secret=secret)


@client_pages.route("/clients/<client_id>/delete", methods=["POST"])
@login_required
def delete_client(client_id: str) -> Response:
    user = current_user._get_current_object()
    row = db_session.scalar(
        select(OAuthClient).where(
            OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None)
        )
    )
    if row is None or row.owner_id != user.id:
        return error_response(404, "No such application.")
    revoke_client(row)
    db_session.commit()
    flash(f"The application {row.name!r} is deleted; its tokens no longer work.", "success")
    return redirect(url_for("oauth_clients.clients"))
