"""OAuth clients as Authlib sees them: first-party from the config file, third-party from rows.

Every configured service other than meta that has ``oauth-client-id`` and
``oauth-client-secret`` is a first-party client: confidential, redirect URI
``{origin}/oauth/callback``, post-logout redirect URI ``{origin}/``, pre-authorized (no
consent screen), every grant, every scope.
Third-party clients are :class:`~meta.oauth.models.OAuthClient` rows registered at
``/clients``: authorization code (+ refresh) only, consent required.
"""

from __future__ import annotations

import abc
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientMixin

from meta.oauth.models import OAuthClient, digest

if TYPE_CHECKING:
    from srcore.config import Config

__all__ = [
    "Client",
    "FirstPartyClient",
    "ThirdPartyClient",
    "check_redirect_uri_value",
    "first_party_clients",
    "redirect_uri_matches",
]

_AUTH_METHODS_CONFIDENTIAL = frozenset({"client_secret_basic", "client_secret_post"})


class Client(ClientMixin):  # type: ignore[misc]
    """What both kinds of client have in common."""

    client_id: str
    name: str
    confidential: bool
    first_party: bool
    service_id: str | None
    grant_types: frozenset[str]
    redirect_uris: tuple[str, ...]
    #: OpenID Connect: how ID tokens are signed, where logout may return, where the
    #: back-channel logout token goes.
    id_token_alg: str = "RS256"  # noqa: S105 - an algorithm name
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        # The grammar and the services are checked by the server; an empty request gets
        # the profile, which is what logging in needs.
        return scope if scope else "meta/profile:RO"

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(redirect_uri_matches(uri, redirect_uri) for uri in self.redirect_uris)

    @abc.abstractmethod
    def check_client_secret(self, client_secret: str) -> bool:
        """First-party secrets come from the config file, third-party ones from the database."""

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.confidential:
            return method in _AUTH_METHODS_CONFIDENTIAL
        # Public clients cannot authenticate; they may still revoke their own tokens.
        return method == "none" and endpoint in ("token", "revocation")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.client_id}>"


@dataclass(repr=False)
class FirstPartyClient(Client):
    """A service of the network, trusted because the operator configured it."""

    client_id: str
    secret: str
    service_id: str
    origin: str
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.service_id
        self.confidential = True
        self.first_party = True
        self.grant_types = frozenset({"authorization_code", "refresh_token", "client_credentials"})
        self.redirect_uris = (self.origin.rstrip("/") + "/oauth/callback",)
        # A service's "Log out" goes through meta's end-session endpoint and back to the
        # service's own front page (srcore.auth.oauth_client), with nothing to configure.
        self.post_logout_redirect_uris = (self.origin.rstrip("/") + "/",)

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.secret.encode())

    def beyond_its_own(self, scope: str | None) -> list[str]:
        """The scopes of *scope* a service gets only as any application does: all but
        meta's profile read-only, its own service's, and OpenID's (words without a
        ``/``). Whoever controls one service gets no token for another without its
        user's yes (docs/security.md, "A compromised service")."""
        mine = f"{self.service_id}/"
        return [
            s
            for s in (scope or "").split()
            if "/" in s and s != "meta/profile:RO" and not s.startswith(mine)
        ]


class ThirdPartyClient(Client):
    """An application a user registered; it asks every user for consent."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row
        self.client_id = row.client_id
        self.name = row.name
        self.confidential = row.confidential
        self.first_party = False
        self.service_id = None
        self.grant_types = frozenset({"authorization_code", "refresh_token"})
        self.redirect_uris = tuple(row.redirect_uri_list)
        self.id_token_alg = row.id_token_alg or "RS256"
        self.post_logout_redirect_uris = tuple(row.post_logout_redirect_uri_list)
        self.backchannel_logout_uri = row.backchannel_logout_uri or None

    def check_client_secret(self, client_secret: str) -> bool:
        if not self.confidential or not self.row.secret_hash:
            return False
        return hmac.compare_digest(digest(client_secret), self.row.secret_hash)


def first_party_clients(config: Config) -> dict[str, FirstPartyClient]:
    """The network's services that log users in through meta, by client id."""
    clients: dict[str, FirstPartyClient] = {}
    for service_id in config.services:
        if service_id == "meta":
            continue
        section = config.section(service_id)
        client_id = section.get("oauth-client-id")
        secret = section.get("oauth-client-secret")
        if not client_id or not secret:
            continue
        clients[str(client_id)] = FirstPartyClient(
            client_id=str(client_id),
            secret=str(secret),
            service_id=service_id,
            origin=str(section["origin"]),
        )
    return clients


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Whether *requested* is the registered redirect URI *registered*.

    Exact string match, except that a native app's loopback redirect
    (``http://127.0.0.1/cb``, ``http://[::1]/cb``) matches on any port: the app listens on
    whatever port the system gives it (RFC 8252 7.3). ``localhost`` gets no such freedom.
    """
    if requested == registered:
        return True
    try:
        mine, theirs = urlsplit(registered), urlsplit(requested)
        theirs.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return False
    if mine.scheme != "http" or theirs.scheme != "http" or mine.hostname is None:
        return False
    if not _is_loopback_ip(mine.hostname):
        return False
    return (
        theirs.hostname == mine.hostname
        and theirs.username is None
        and theirs.password is None
        and (theirs.path, theirs.query, theirs.fragment) == (mine.path, mine.query, "")
        and "#" not in requested
    )


#: A private-use URI scheme of a native app: a reversed domain name (RFC 8252 7.1).
_PRIVATE_SCHEME = re.compile(r"^[a-z][a-z0-9+-]*(\.[a-z0-9][a-z0-9+-]*)+$")


def check_redirect_uri_value(uri: str) -> str | None:
    """Why *uri* cannot be a registered redirect URI, or None if it can.

    HTTPS anywhere; plain HTTP only on the loopback interface, and private-use schemes
    named after a domain (``com.example.app:/cb``), for native apps (RFC 8252). No fragment
    (RFC 6749 3.1.2), no user info, it must be absolute, and printable ASCII only.
    """
    if len(uri) > 512:
        return "A redirect URI may be at most 512 characters long."
    if any(c.isspace() or c == "\x00" for c in uri):
        return "A redirect URI may not contain spaces."
    if not all(" " < c < "\x7f" for c in uri):
        # The consent page names the host: one in another script reads as the site it
        # imitates while the browser goes to its xn-- form; a bidi override reverses it.
        return (
            f"{uri!a} may hold only printable ASCII (RFC 3986): write a domain name in its "
            "xn-- form and percent-encode other characters."
        )
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return f"{uri} is not a valid URL."
    del port
    if parts.fragment or "#" in uri:
        return f"{uri} may not have a #fragment."
    if parts.scheme not in ("https", "http"):
        if _PRIVATE_SCHEME.match(parts.scheme) and uri.startswith(parts.scheme + ":"):
            if parts.username is not None or parts.password is not None:
                return f"{uri} may not contain a user name or password."
            return None
        return (
            f"{uri} must be an absolute https:// URL, or use a native app's scheme named "
            "after a domain (com.example.app:/callback)."
        )
    if not parts.hostname:
        return f"{uri} must be an absolute https:// URL."
    if parts.username is not None or parts.password is not None:
        return f"{uri} may not contain a user name or password."
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return f"{uri} must use https:// (plain http is allowed for 127.0.0.1 and localhost only)."
    return None


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback(host: str) -> bool:
    return host == "localhost" or _is_loopback_ip(host)
