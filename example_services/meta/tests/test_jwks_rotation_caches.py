"""meta's key rotation seen by a relying party that caches the JWKS as HTTP allows.

meta serves ``/oauth/jwks.json`` ``Cache-Control: public, max-age=300``: a client may verify
tokens for that long against its copy without asking again. The client here is requests
with CacheControl (an RFC 9111 cache meta does not use itself) fetching the JWKS over a
socket, and PyJWT verifying the access tokens (``EdDSA``) and ID tokens (``RS256``) meta
issues through the code flow. One clock stands for the whole network: meta's key ring, the
``Date`` its server stamps on answers, and the cache's idea of now; the test moves it
forward instead of waiting.

Across two rotations, the second made while the first one's keys wait to sign, every token
meta has issued verifies at every moment against the JWKS the cache gives, and each new
key was published the whole cache lifetime before it signed. The very first keys, on an
empty database, sign at once; an emergency rotation (``--at-once``) does too, and a copy
from before lacks its keys until it is fetched again, as the operator guide says.
"""

from __future__ import annotations

import email.utils
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import cachecontrol.controller
import jwt
import pytest
import requests
from cachecontrol import CacheControlAdapter
from cachecontrol.cache import DictCache
from oauth_helpers import oauth_app
from oidc_helpers import register, tokens_for
from sqlalchemy import func, select

from srcore.testing import log_in_client, serving

__all__ = ["oauth_app"]  # a fixture used by this module

TIMEOUT = 10
#: How far the clock moves between two moments of the relying party.
STEP = 20
#: The JWKS's max-age, as the tests read it from the answer (not from meta's constant).
MAX_AGE = 300


class Clock:
    """The network's clock: starts at the real time (the tokens' own ``iat`` and ``exp``
    come from it, and every moment here stays well within their hour), moved by hand."""

    def __init__(self) -> None:
        import time

        self._now = time.time()
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass
class RelyingParty:
    """An application logged in to with meta: its tokens, and its cache of the JWKS."""

    jwks_url: str
    issuer: str
    rp: dict[str, str]
    browser: Any
    http: requests.Session
    tokens: list[tuple[str, str]] = field(default_factory=list)  # (access, ID token)

    def log_in(self) -> tuple[str, str]:
        body = tokens_for(self.browser, self.rp)
        pair = (body["access_token"], body["id_token"])
        self.tokens.append(pair)
        return pair

    def jwks(self, *, past_cache: bool = False) -> dict[str, Any]:
        """The JWKS from the cache, or with *past_cache* from meta, its answer cached."""
        headers = {"Cache-Control": "no-cache"} if past_cache else {}
        answer = self.http.get(self.jwks_url, headers=headers, timeout=TIMEOUT)
        assert answer.status_code == 200, answer.text[:300]
        cache = answer.headers["Cache-Control"]
        assert f"max-age={MAX_AGE}" in cache and "public" in cache, cache
        body: dict[str, Any] = answer.json()
        return body

    def check(self, token: str, jwks: dict[str, Any], *, audience: str | None) -> str:
        """Verify *token* as a relying party does, with the keys of *jwks*; its kid."""
        kid: str = jwt.get_unverified_header(token)["kid"]
        entries = [key for key in jwks["keys"] if key["kid"] == kid]
        assert entries, f"key {kid} is not in the cached JWKS {[k['kid'] for k in jwks['keys']]}"
        (entry,) = entries
        jwt.decode(
            token,
            jwt.PyJWK(entry),
            algorithms=[entry["alg"]],
            issuer=self.issuer,
            audience=audience,
            options={"verify_aud": audience is not None},
        )
        return kid

    def check_all(self, jwks: dict[str, Any]) -> tuple[str, str]:
        """Every token issued so far verifies against *jwks*; the kids of the last pair."""
        kids = ("", "")
        for access, id_token in self.tokens:
            kids = (
                self.check(access, jwks, audience=None),
                self.check(id_token, jwks, audience=self.rp["id"]),
            )
        return kids


@dataclass
class Origin:
    """meta served on 127.0.0.1 with the test's clock; how often the JWKS was asked for."""

    url: str
    jwks_requests: int = 0


@pytest.fixture
def clock(oauth_app: Any, monkeypatch: pytest.MonkeyPatch) -> Clock:
    """One clock for meta's key ring and the relying party's HTTP cache."""
    now = Clock()
    oauth_app.extensions["meta.oauth"].ring.clock = now.datetime
    monkeypatch.setattr(cachecontrol.controller, "time", SimpleNamespace(time=now.time))
    return now


@pytest.fixture
def origin(oauth_app: Any, clock: Clock) -> Iterator[Origin]:
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return email.utils.formatdate(clock.time(), usegmt=True)

    served = Origin("")

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/oauth/jwks.json":
            served.jwks_requests += 1
        return oauth_app.wsgi_app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Handler)
    with serving(server):
        served.url = f"http://127.0.0.1:{server.server_port}"
        yield served


@pytest.fixture
def party(oauth_app: Any, accounts: Any, origin: Origin) -> Iterator[RelyingParty]:
    http = requests.Session()
    http.mount("http://", CacheControlAdapter(cache=DictCache()))
    rp = register(oauth_app, accounts, alg="RS256")
    browser = log_in_client(oauth_app.test_client(), accounts.make("alice"))
    try:
        yield RelyingParty(
            jwks_url=origin.url + "/oauth/jwks.json",
            issuer=oauth_app.extensions["meta.oauth"].issuer,
            rp=rp,
            browser=browser,
            http=http,
        )
    finally:
        http.close()


def _key_count(app: Any) -> int:
    from meta.oauth.models import SigningKey

    with app.extensions["srcore"].db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(SigningKey)) or 0)


def test_every_token_verifies_with_the_cached_jwks_across_rotations(
    oauth_app: Any, clock: Clock, origin: Origin, party: RelyingParty
) -> None:
    ring = oauth_app.extensions["meta.oauth"].ring
    # First start: no key yet. The first login's tokens are signed at once, by keys the
    # first copy of the JWKS has.
    assert _key_count(oauth_app) == 0
    party.log_in()
    first = party.check_all(party.jwks())

    rotations = {2 * STEP: "first", 7 * STEP: "second, while the first one's keys wait"}
    new_keys: dict[str, tuple[float, set[str]]] = {}  # kid: (published at, kids then)
    signers: list[tuple[str, str]] = [first]
    end = 7 * STEP + 2 * (MAX_AGE + 60) + 3 * STEP
    elapsed = 0
    while elapsed < end:
        clock.advance(STEP)
        elapsed += STEP
        if elapsed in rotations:
            made = ring.rotate()
            # Published at once, for any client asking meta now (not this one's cache).
            answer = requests.get(party.jwks_url, timeout=TIMEOUT)
            fresh = {key["kid"] for key in answer.json()["keys"]}
            for kid, _alg, _start in made:
                assert kid in fresh, (rotations[elapsed], kid, fresh)
                new_keys[kid] = (clock.time(), fresh)
        party.log_in()
        # The cache answers from its copy while it is fresh; every token meta issued so
        # far, the one of this moment included, verifies against what it gives.
        kids = party.check_all(party.jwks())
        for kid in kids:
            if kid in new_keys and kid not in {k for pair in signers for k in pair}:
                published = new_keys[kid][0]
                # A new key signs only after a copy made before it appeared has expired.
                assert clock.time() - published > MAX_AGE, (kid, clock.time() - published)
        if kids != signers[-1]:
            signers.append(kids)

    # Each rotation's keys signed in their turn: both algorithms, three keys each.
    assert len({access for access, _ in signers}) == 3, signers
    assert len({id_key for _, id_key in signers}) == 3, signers
    assert len(new_keys) == 4
    # The copies were reused: meta was asked about once per max-age, plus the rotations'
    # own uncached looks, not at every moment.
    assert origin.jwks_requests <= end // MAX_AGE + 1 + len(rotations), origin.jwks_requests
    assert origin.jwks_requests < end // STEP


def test_an_emergency_rotation_signs_at_once_and_a_cached_copy_lacks_its_keys(
    oauth_app: Any, clock: Clock, origin: Origin, party: RelyingParty
) -> None:
    """The documented trade-off of ``rotate --at-once``: its keys sign with no wait, so a
    copy of the JWKS from before cannot verify their tokens until it is fetched again; a
    fetch past the cache can, and the old keys stay published for their tokens."""
    ring = oauth_app.extensions["meta.oauth"].ring
    party.log_in()
    before = party.check_all(party.jwks())
    clock.advance(STEP)
    made = {kid for kid, _alg, _start in ring.rotate(at_once=True)}
    access, id_token = party.log_in()
    kids = {jwt.get_unverified_header(token)["kid"] for token in (access, id_token)}
    assert kids == made
    cached = party.jwks()
    assert not made & {key["kid"] for key in cached["keys"]}
    with pytest.raises(AssertionError, match="is not in the cached JWKS"):
        party.check(access, cached, audience=None)
    fetched = party.jwks(past_cache=True)
    assert party.check_all(fetched) != before
    assert set(before) <= {key["kid"] for key in fetched["keys"]}
