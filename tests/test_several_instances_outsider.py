"""docs/operators.md: "Several processes per service, several hosts per service. Set
`redis-url` so every process sees every push at once and rate limits count network-wide."

An operator runs each service twice behind a load balancer: two gunicorn instances (two
hosts, here two ports of 127.0.0.1) of meta and of todo, each with two workers, on one
config file (the same secrets, databases and ``redis-url``, a redis-server of the test's
own), and both instances' webhook workers at once. A person's browser is a ``requests``
session whose every request the "load balancer" sends to the instance the test picks, with
the origin's ``Host`` kept, as a proxy passes it. meta's revocation pull runs once an hour
here, so whatever reaches every process came by the push and Redis.

Two tests run networks of their own: without Redis (a logout reaches the other processes by
their pull, as operators.md says), and meta alone for an emergency key rotation.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from srcore.testing import (
    free_port,
    require_or_skip,
    run_service,
    run_worker,
    write_network_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import reliability as harness

from tests.conftest import require_postgres

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
#: How long anything may take to happen here (a bound against hanging, not a measure).
WITHIN = 30.0
#: todo's write rate limit, per user, shared by its instances through Redis.
TODO_WRITES = 4
_T = TypeVar("_T")
#: meta's key command, as an operator runs it on a host of meta.
KEYS_COMMAND = (sys.executable, "-m", "meta.oauth.keys")
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, page[:2000]
    return found.group(1)


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not check():
        assert time.monotonic() < deadline, f"not within {WITHIN} s: {what}"
        time.sleep(0.1)


@dataclass
class Farm:
    """Two instances of meta and of todo on one config: ``origins`` are the addresses
    people use (the load balancer's), ``instances`` each service's two gunicorns."""

    config: Path
    origins: dict[str, str]
    instances: dict[str, tuple[str, str]]
    redis_url: str

    def browser(self) -> Browser:
        return Browser(self)

    def create_user(self, name: str) -> None:
        from meta.admin.cli import create_user

        create_user(str(self.config), name, f"{name}@example.org", PASSWORD)

    @contextlib.contextmanager
    def meta_app(self) -> Iterator[Any]:
        import meta

        app = meta.create_app(config=self.config)
        try:
            with app.app_context():
                yield app
        finally:
            app.extensions["srcore"].db.dispose()

    def client_secret(self, service: str) -> str:
        found = re.search(
            rf"\[{service}\][^\[]*?oauth-client-secret = (\S+)", self.config.read_text()
        )
        assert found, service
        return found.group(1)


class Browser(requests.Session):
    """A person's browser behind the load balancer: a request to a service's origin goes
    to the instance ``route`` names for it now (0 or 1), with the origin's ``Host``."""

    def __init__(self, farm: Farm) -> None:
        super().__init__()
        self.farm = farm
        self.route = dict.fromkeys(farm.origins, 0)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        assert request.url is not None
        split = urlsplit(request.url)
        for service, origin in self.farm.origins.items():
            netlocs = {urlsplit(url).netloc for url in self.farm.instances[service]}
            if split.netloc in netlocs:
                target = urlsplit(self.farm.instances[service][self.route[service]]).netloc
                request.url = split._replace(netloc=target).geturl()
                request.headers["Host"] = urlsplit(origin).netloc
        kwargs["timeout"] = kwargs.get("timeout") or WITHIN
        return super().send(request, **kwargs)

    def at(self, **route: int) -> Browser:
        self.route.update(route)
        return self

    def log_in(self, name: str, path: str = "/create", *, finish_at: int | None = None) -> None:
        """Open todo's *path*, which sends the browser to meta's login form, and log in as
        *name*; with *finish_at*, the load balancer sends the way back to todo (meta's
        redirect to todo's callback) to that todo instance."""
        todo = self.farm.origins["todo"]
        page = self.get(todo + path)
        assert page.url.split("?")[0].endswith("/login"), (page.url, page.text[:2000])
        if finish_at is not None:
            self.route["todo"] = finish_at
        back = self.post(
            page.url, data={"csrf_token": csrf_of(page.text), "login": name, "password": PASSWORD}
        )
        assert back.status_code == 200 and urlsplit(back.url).path == path, (
            back.url,
            back.text[:2000],
        )


@contextlib.contextmanager
def running_farm(
    tmp: Path,
    global_keys: dict[str, str],
    *,
    webhook_workers: int,
    run: tuple[str, ...] = ("meta", "todo"),
    backend: str = "sqlite",
) -> Iterator[Farm]:
    """The services of *run* (of meta and todo, both in the config, with *global_keys*),
    each as two gunicorn instances of two workers, and *webhook_workers* webhook workers of
    each; their databases are SQLite files or, for *backend* ``postgresql``, PostgreSQL
    databases of their own (dropped afterwards)."""
    from srcore import testdb
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    ports = {"meta": free_port(), "todo": free_port()}
    config = write_network_config(tmp / "config.ini", ports, global_keys=global_keys)
    text = config.read_text(encoding="utf-8")
    databases = []
    if backend == "postgresql":
        for service in ports:
            databases.append(testdb.create_test_database())
            text = re.sub(
                rf"(\[{service}\][^\[]*?database-url = )[^\n]*",
                lambda found: found.group(1) + databases[-1],
                text,
            )
    config.write_text(
        text.replace("[todo]\n", f"[todo]\nwrite-rate-limit = {TODO_WRITES}/hour\n"),
        encoding="utf-8",
    )
    with contextlib.ExitStack() as stack:
        for url in databases:
            stack.callback(testdb.drop_test_database, url)
        for service in ports:
            upgrade_all(migration_target(service, config))
        instances: dict[str, tuple[str, str]] = {}
        for service in run:
            port = ports[service]
            first = stack.enter_context(
                run_service(service, config, port=port, workers=2, timeout=60)
            )
            second = stack.enter_context(
                run_service(service, config, port=free_port(), workers=2, timeout=60)
            )
            instances[service] = (first, second)
        for service in run:
            for _ in range(webhook_workers):
                stack.enter_context(run_worker(service, config, timeout=60))
        origins = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
        yield Farm(config, origins, instances, global_keys.get("redis-url", ""))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def farm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Farm]:
    require_or_skip(harness.redis_available(), "redis-server")
    if request.param == "postgresql":
        require_postgres()
    tmp = tmp_path_factory.mktemp("several-instances")
    with harness.RedisServer(tmp / "redis") as redis_server:
        keys = {
            "redis-url": redis_server.url,
            "revocation-pull-interval": "1h",
            "allow-private-webhook-targets": "127.0.0.0/8",
            "webhook-poll-interval": "1s",
        }
        with running_farm(tmp, keys, webhook_workers=2, backend=request.param) as running:
            yield running


# -- one session, one form, one login across instances ---------------------------------------


def test_a_session_a_form_and_a_login_cross_instances(farm: Farm) -> None:
    farm.create_user("ann")
    browser = farm.browser()
    # The login starts at todo's first instance (its state and PKCE verifier go into that
    # instance's session cookie) and comes back to the second.
    browser.at(todo=0, meta=1).log_in("ann", finish_at=1)
    for instance in (0, 1):
        assert browser.at(todo=instance).get(farm.origins["todo"] + "/create").status_code == 200
    # A form shown by one instance is taken by the other.
    form = browser.at(todo=0).get(farm.origins["todo"] + "/create")
    made = browser.at(todo=1).post(
        farm.origins["todo"] + "/create",
        data={"csrf_token": csrf_of(form.text), "name": "ann-bugs", "visibility": "public"},
        headers={"Origin": farm.origins["todo"]},
        allow_redirects=False,
    )
    assert made.status_code in (302, 303), made.text[:2000]
    assert urlsplit(made.headers["Location"]).path == "/~ann/ann-bugs"
    # meta's session, made at its second instance, holds at its first.
    assert browser.at(meta=0).get(farm.origins["meta"] + "/profile").url.endswith("/profile")


# -- what meta pushes reaches every process of every instance ----------------------------------


def every_process(farm: Farm, service: str, fetch: Callable[[str], _T]) -> list[_T]:
    """*fetch(instance URL)*'s answers from every process of *service*: four requests sent
    at once to each instance, whose two sync workers take one request at a time, so both
    answer some of them."""
    bases = [base for base in farm.instances[service] for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(fetch, bases))


def page_with(farm: Farm, browser: Browser, service: str, path: str) -> Callable[[str], int]:
    """A GET of *path* at one instance with *browser*'s cookies and nothing else (a fresh
    connection each time); its status."""
    cookies = {cookie.name: cookie.value for cookie in browser.cookies}
    host = urlsplit(farm.origins[service]).netloc

    def fetch(base: str) -> int:
        answer = requests.get(
            base + path,
            cookies=cookies,
            headers={"Host": host, "Connection": "close"},
            allow_redirects=False,
            timeout=WITHIN,
        )
        return answer.status_code

    return fetch


def api_with(token: str, path: str) -> Callable[[str], int]:
    def fetch(base: str) -> int:
        answer = requests.get(
            base + path,
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=WITHIN,
        )
        return answer.status_code

    return fetch


def held_everywhere(farm: Farm, service: str, fetch: Callable[[str], int], status: int) -> None:
    """Wait until every process answers *status*, then check it does several times over
    (one round may miss a worker that never got the push)."""
    wait_for(lambda: set(every_process(farm, service, fetch)) == {status}, f"{status} everywhere")
    for _ in range(3):
        assert set(every_process(farm, service, fetch)) == {status}


def test_a_logout_at_meta_ends_the_session_at_every_process(farm: Farm) -> None:
    farm.create_user("ben")
    browser = farm.browser()
    browser.log_in("ben")
    at_todo = page_with(farm, browser, "todo", "/create")
    at_meta = page_with(farm, browser, "meta", "/profile")
    assert set(every_process(farm, "todo", at_todo)) == {200}
    assert set(every_process(farm, "meta", at_meta)) == {200}

    front = browser.at(meta=1).get(farm.origins["meta"] + "/")
    out = browser.post(
        farm.origins["meta"] + "/logout",
        data={"csrf_token": csrf_of(front.text)},
        headers={"Origin": farm.origins["meta"]},
    )
    assert out.status_code == 200, out.text[:2000]
    # meta's push lands on one todo worker; Redis carries it to the three others.
    held_everywhere(farm, "todo", at_todo, 302)
    held_everywhere(farm, "meta", at_meta, 302)


def test_a_process_started_after_a_logout_knows_it_even_without_pull_rounds(
    farm: Farm, tmp_path: Path
) -> None:
    """operators.md: "A process that starts pulls at once" -- also with
    ``revocation-pull-interval = 0s`` (no rounds: pushes, and Redis between processes),
    where a process started (or restarted) after a logout once knew nothing of it and
    took the ended session for a good one."""
    farm.create_user("liz")
    browser = farm.browser()
    browser.log_in("liz")
    at_todo = page_with(farm, browser, "todo", "/create")
    front = browser.get(farm.origins["meta"] + "/")
    out = browser.post(
        farm.origins["meta"] + "/logout",
        data={"csrf_token": csrf_of(front.text)},
        headers={"Origin": farm.origins["meta"]},
    )
    assert out.status_code == 200, out.text[:2000]
    held_everywhere(farm, "todo", at_todo, 302)
    # A third todo host joins (or one restarts) on the same file, but with no pull rounds.
    config = tmp_path / "config.ini"
    text = farm.config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("revocation-pull-interval = 1h", "revocation-pull-interval = 0s"),
        encoding="utf-8",
    )
    with run_service("todo", config, port=free_port(), workers=2, timeout=60) as joined:
        assert {at_todo(joined) for _ in range(4)} == {302}


def test_a_revoked_token_is_refused_by_every_process(farm: Farm) -> None:
    from meta.admin.cli import create_token_for

    farm.create_user("cat")
    token, _ = create_token_for(
        str(farm.config), "cat", ("todo/trackers:RO",), name="laptop", days=30
    )
    at_todo = api_with(token, "/api/trackers")
    assert set(every_process(farm, "todo", at_todo)) == {200}

    browser = farm.browser().at(meta=1)
    browser.log_in("cat")
    security = browser.get(farm.origins["meta"] + "/security")
    found = re.search(r'action="(/security/tokens/\d+/revoke)"', security.text)
    assert found, security.text[:3000]
    revoked = browser.at(meta=0).post(
        farm.origins["meta"] + found.group(1),
        data={"csrf_token": csrf_of(security.text)},
        headers={"Origin": farm.origins["meta"]},
    )
    assert revoked.status_code == 200, revoked.text[:2000]
    held_everywhere(farm, "todo", at_todo, 401)


# -- one-time things are one-time across instances ---------------------------------------------

_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def test_a_form_sent_to_both_instances_makes_one_ticket(farm: Farm) -> None:
    """srcore's sent-once forms (``forms.once()``): the same form sent to one instance,
    then to the other (a resend after a slow answer, through the load balancer), opens
    one ticket, and the second answer leads to it."""
    farm.create_user("mia")
    browser = farm.browser().at(todo=0)
    browser.log_in("mia")
    todo = farm.origins["todo"]
    form = browser.get(todo + "/create")
    made = browser.post(
        todo + "/create",
        data={"csrf_token": csrf_of(form.text), "name": "once", "visibility": "public"},
        headers={"Origin": todo},
    )
    assert made.status_code == 200 and made.url.endswith("/~mia/once"), made.url
    page = browser.get(todo + "/~mia/once/new")
    fields = dict(_HIDDEN.findall(page.text))
    assert "form_once" in fields, page.text[:2000]
    answers = [
        browser.at(todo=instance).post(
            todo + "/~mia/once/new",
            data={**fields, "title": "Sent twice"},
            headers={"Origin": todo},
            allow_redirects=False,
        )
        for instance in (0, 1)
    ]
    assert [answer.status_code for answer in answers][1] == 303, answers
    assert answers[0].status_code in (302, 303), answers[0].text[:2000]
    assert answers[0].headers["Location"] == answers[1].headers["Location"]
    listing = browser.get(todo + "/~mia/once").text
    assert listing.count("Sent twice") == 1, listing[:3000]


def log_in_at_meta(farm: Farm, browser: Browser, name: str) -> requests.Response:
    """meta's own login form, filled in at whichever instance *browser* is routed to."""
    page = browser.get(farm.origins["meta"] + "/login")
    return browser.post(
        farm.origins["meta"] + "/login",
        data={"csrf_token": csrf_of(page.text), "login": name, "password": PASSWORD},
        headers={"Origin": farm.origins["meta"]},
    )


def user_id(farm: Farm, name: str) -> int:
    from meta.models import User
    from sqlalchemy import select

    with farm.meta_app() as app, app.extensions["srcore"].db.transaction() as session:
        found: int = session.scalars(select(User.id).where(User.username == name)).one()
        return found


def test_a_totp_code_used_at_one_meta_is_refused_at_the_other(farm: Farm) -> None:
    import pyotp
    from meta import totp

    farm.create_user("dan")
    secret = pyotp.random_base32(32)
    with farm.meta_app() as app, app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, user_id(farm, "dan"), secret, 0)
    # Two browsers pass the password step, one at each instance, and are sent to the other
    # for the code's step; one code is typed in both.
    steps = []
    for instance in (0, 1):
        browser = farm.browser().at(meta=instance)
        asked = log_in_at_meta(farm, browser, "dan")
        assert urlsplit(asked.url).path == "/login/verify", (asked.url, asked.text[:2000])
        steps.append((browser.at(meta=1 - instance), dict(_HIDDEN.findall(asked.text))))
    code = pyotp.TOTP(secret).now()
    answers = []
    for browser, fields in steps:
        sent = browser.post(
            farm.origins["meta"] + "/login/verify",
            data={**fields, "code": code},
            headers={"Origin": farm.origins["meta"]},
        )
        answers.append((sent.status_code, urlsplit(sent.url).path))
    assert answers[0] == (200, "/profile"), answers
    assert answers[1][0] == 400 and answers[1][1] == "/login/verify", answers


def test_a_reset_link_followed_at_one_meta_is_spent_at_the_other(farm: Farm) -> None:
    from datetime import timedelta

    from meta import logic
    from meta.models import TokenPurpose, User

    farm.create_user("eve")
    with farm.meta_app() as app, app.extensions["srcore"].db.transaction() as session:
        user = session.get(User, user_id(farm, "eve"))
        assert user is not None
        link = logic.issue_token(
            session, user, TokenPurpose.reset, email=user.email, lifetime=timedelta(hours=1)
        )
    path = farm.origins["meta"] + f"/reset/{link}"
    first, second = farm.browser().at(meta=0), farm.browser().at(meta=1)
    # Both open the link; the first sets a password with it, then the second tries.
    forms = [browser.get(path) for browser in (first, second)]
    assert [form.status_code for form in forms] == [200, 200]
    answers = [
        browser.post(
            path,
            data={"csrf_token": csrf_of(form.text), "password": f"new {PASSWORD} {n}"},
            headers={"Origin": farm.origins["meta"]},
            allow_redirects=False,
        ).status_code
        for n, (browser, form) in enumerate(zip((first, second), forms, strict=True))
    ]
    assert answers[0] in (302, 303) and answers[1] == 404, answers
    assert second.get(path).status_code == 404


def meta_test_helper(name: str) -> Any:
    """A helper module of meta's own tests (its software authenticator), loaded from its
    file: meta's tests are not a package this suite imports from."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "example_services/meta/tests" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"meta_tests_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_passkey_challenge_made_at_one_meta_is_answered_at_the_other_once(
    farm: Farm,
) -> None:
    """A passkey's challenges (kept in meta's database, bound to the browser's session)
    work across instances: a key added with options from one instance and the answer sent
    to the other, a passwordless login the same way; the login's answer replayed (same
    browser, or another) is refused at either instance."""
    from meta.passkeys import RelyingParty

    SoftKey = meta_test_helper("passkey_helpers").SoftKey

    meta = farm.origins["meta"]
    json_heads = {"Accept": "application/json", "Origin": meta}

    def csrf(browser: Browser, page: str) -> dict[str, str]:
        return {**json_heads, "X-CSRFToken": csrf_of(browser.get(meta + page).text)}

    farm.create_user("pat")
    owner = farm.browser().at(meta=0)
    assert log_in_at_meta(farm, owner, "pat").url.endswith("/profile")
    rp = RelyingParty.from_origin(meta, "x")
    key = SoftKey(rp_id=rp.id, origin=rp.origin)
    page = owner.get(meta + "/security/passkeys")
    options = owner.post(
        meta + "/security/passkeys/options",
        data={"name": "laptop", "current_password": PASSWORD, "csrf_token": csrf_of(page.text)},
        headers=json_heads,
    )
    assert options.status_code == 200, options.text[:2000]
    added = owner.at(meta=1).post(
        meta + "/security/passkeys",
        json=key.create(options.json()),
        headers=csrf(owner, "/security"),
    )
    assert added.status_code == 200, added.text[:2000]

    stranger = farm.browser().at(meta=1)
    asked = stranger.post(
        meta + "/login/passkey/options", json={}, headers=csrf(stranger, "/forgot")
    )
    assert asked.status_code == 200, asked.text[:2000]
    answer = key.get(asked.json())
    done = stranger.at(meta=0).post(
        meta + "/login/passkey", json=answer, headers=csrf(stranger, "/forgot")
    )
    assert done.status_code == 200, done.text[:2000]
    assert stranger.get(meta + "/profile").url.endswith("/profile")
    # The same answer again: the challenge is spent, wherever it is sent and by whom.
    again = stranger.at(meta=1).post(
        meta + "/login/passkey", json=answer, headers=csrf(stranger, "/forgot")
    )
    assert again.status_code == 400, again.text[:2000]
    other = farm.browser().at(meta=1)
    copied = other.post(meta + "/login/passkey", json=answer, headers=csrf(other, "/forgot"))
    assert copied.status_code == 400, copied.text[:2000]
    assert other.get(meta + "/profile", allow_redirects=False).status_code == 302


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_call(farm: Farm, instance: int, **form: str) -> requests.Response:
    """todo's call to meta's token endpoint, at one instance of meta."""
    return requests.post(
        farm.instances["meta"][instance] + "/oauth/token",
        data=form,
        auth=("todo", farm.client_secret("todo")),
        headers={"Host": urlsplit(farm.origins["meta"]).netloc},
        timeout=WITHIN,
    )


def authorize(farm: Farm, name: str) -> tuple[str, dict[str, str]]:
    """*name* logs in at meta's first instance and approves todo's login there; the code
    meta sends back and what todo would exchange it with."""
    farm.create_user(name)
    browser = farm.browser().at(meta=0)
    assert log_in_at_meta(farm, browser, name).url.endswith("/profile")
    verifier, challenge = pkce()
    redirect_uri = farm.origins["todo"] + "/oauth/callback"
    query = {
        "response_type": "code",
        "client_id": "todo",
        "redirect_uri": redirect_uri,
        "scope": "meta/profile:RO",
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    back = browser.get(
        farm.origins["meta"] + "/oauth/authorize?" + urlencode(query), allow_redirects=False
    )
    assert back.status_code == 302, back.text[:2000]
    (code,) = parse_qs(urlsplit(back.headers["Location"]).query)["code"]
    exchange = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    return code, exchange


def test_a_code_replayed_at_the_other_meta_is_refused_and_revokes_its_tokens(
    farm: Farm,
) -> None:
    _code, exchange = authorize(farm, "fay")
    first = token_call(farm, 0, **exchange)
    assert first.status_code == 200, first.text
    tokens = first.json()
    replayed = token_call(farm, 1, **exchange)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    # The replay revoked what the code gave: meta's profile API refuses its access token
    # at every process of both instances, and its refresh token is dead.
    held_everywhere(farm, "meta", api_with(tokens["access_token"], "/api/profile"), 401)
    again = token_call(farm, 1, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert again.status_code == 400, again.text


def test_a_refresh_token_is_spent_once_across_instances(farm: Farm) -> None:
    _code, exchange = authorize(farm, "gus")
    tokens = token_call(farm, 0, **exchange).json()
    # Sent to both instances at once: one refresh goes through.
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda n: token_call(farm, n, **refresh), (0, 1)))
    assert sorted(a.status_code for a in answers) == [200, 400], [a.text for a in answers]
    (fresh,) = [a.json() for a in answers if a.status_code == 200]
    # The spent one came back: the grant is over, the new pair with it (RFC 9700 4.14.2).
    again = token_call(farm, 1, grant_type="refresh_token", refresh_token=fresh["refresh_token"])
    assert again.status_code == 400, again.text
    held_everywhere(farm, "meta", api_with(fresh["access_token"], "/api/profile"), 401)


# -- counts and caches -------------------------------------------------------------------------


def test_todos_write_limit_counts_both_instances_together(farm: Farm) -> None:
    from meta.admin.cli import create_token_for

    farm.create_user("hal")
    token, _ = create_token_for(str(farm.config), "hal", ("todo/trackers:RW",), name="cli", days=30)

    def create(instance: int, n: int) -> int:
        return requests.post(
            farm.instances["todo"][instance] + "/api/trackers",
            json={"name": f"hal-{n}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=WITHIN,
        ).status_code

    answers = [create(n % 2, n) for n in range(TODO_WRITES + 2)]
    assert answers == [201] * TODO_WRITES + [429, 429], answers


def test_an_edit_at_one_instance_shows_at_the_other_at_once(farm: Farm) -> None:
    from meta.admin.cli import create_token_for

    farm.create_user("ida")
    token, _ = create_token_for(str(farm.config), "ida", ("todo/trackers:RW",), name="cli", days=30)
    heads = {"Authorization": f"Bearer {token}"}
    todo = farm.instances["todo"]
    made = requests.post(
        todo[0] + "/api/trackers",
        json={"name": "notes", "description": "*first* words"},
        headers=heads,
        timeout=WITHIN,
    )
    assert made.status_code == 201, made.text

    def shown(base: str) -> str:
        page = requests.get(base + "/~ida/notes", headers={"Connection": "close"}, timeout=WITHIN)
        return "".join(re.findall(r"<(?:em|strong)>(first|second)</", page.text))

    assert set(every_process(farm, "todo", shown)) == {"first"}
    edited = requests.patch(
        todo[1] + "/api/trackers/notes",
        json={"description": "**second** words"},
        headers=heads,
        timeout=WITHIN,
    )
    assert edited.status_code == 200, edited.text
    assert set(every_process(farm, "todo", shown)) == {"second"}


def test_metas_form_limits_count_both_instances_together(farm: Farm) -> None:
    """meta's /forgot takes 5 POSTs per 15 minutes from one address, wherever they land."""
    from meta.protection import RATE_LIMITS

    assert RATE_LIMITS["forgot"] == "5 per 15 minutes"
    answers = []
    for n in range(7):
        browser = farm.browser().at(meta=n % 2)
        page = browser.get(farm.origins["meta"] + "/forgot")
        sent = browser.post(
            farm.origins["meta"] + "/forgot",
            data={"csrf_token": csrf_of(page.text), "email": f"nobody{n}@example.org"},
            headers={"Origin": farm.origins["meta"]},
            allow_redirects=False,
        )
        answers.append(sent.status_code)
    assert answers[5:] == [429, 429] and 429 not in answers[:5], answers


# -- webhooks ------------------------------------------------------------------------------------


def test_both_instances_webhook_workers_deliver_each_event_once(farm: Farm) -> None:
    """Both todo instances' webhook workers run on one database: each event of a burst
    made at both instances reaches the receiver once."""
    from meta.admin.cli import create_token_for

    farm.create_user("jon")
    token, _ = create_token_for(
        str(farm.config), "jon", ("todo/trackers:RW", "todo/tickets:RW"), name="cli", days=30
    )
    heads = {"Authorization": f"Bearer {token}"}
    todo = farm.instances["todo"]
    with harness.Receiver() as receiver:
        hook = requests.post(
            todo[0] + "/api/webhooks",
            json={"url": receiver.url, "events": ["tracker:created", "tracker:updated"]},
            headers=heads,
            timeout=WITHIN,
        )
        assert hook.status_code == 201, hook.text
        made = requests.post(
            todo[1] + "/api/trackers", json={"name": "hooks"}, headers=heads, timeout=WITHIN
        )
        assert made.status_code == 201, made.text
        # Updates from both instances at once (the last two writes the limit leaves).
        with ThreadPoolExecutor(max_workers=2) as pool:
            edits = list(
                pool.map(
                    lambda n: (
                        requests.patch(
                            todo[n % 2] + "/api/trackers/hooks",
                            json={"description": f"edit {n}"},
                            headers=heads,
                            timeout=WITHIN,
                        ).status_code
                    ),
                    range(2),
                )
            )
        assert edits == [200, 200]
        wait_for(lambda: len(receiver.accepted()) == 3, "three deliveries")
        # Whatever the workers still hold is done: nothing is pending or sending.
        wait_for(lambda: not unfinished_deliveries(farm), "every delivery finished")
        assert sorted(receiver.accepted().values()) == [1, 1, 1], receiver.accepted()
        assert len(receiver.snapshot()) == 3


def unfinished_deliveries(farm: Farm) -> list[Any]:
    import sqlalchemy as sa

    found = re.search(r"\[todo\][^\[]*?database-url = (\S+)", farm.config.read_text())
    assert found
    engine = sa.create_engine(found.group(1))
    try:
        with engine.connect() as connection:
            query = "SELECT id, status FROM srcore_webhook_delivery WHERE status <> 'delivered'"
            return list(connection.execute(sa.text(query)))
    finally:
        engine.dispose()


# -- without Redis ---------------------------------------------------------------------------------


def test_without_redis_a_logout_at_meta_reaches_every_process_by_its_pull(
    tmp_path: Path,
) -> None:
    """operators.md, Redis: "Without Redis a push that reached another process arrives by
    the pull only", every ``revocation-pull-interval``: the session ends everywhere all the
    same, by then."""
    keys = {"revocation-pull-interval": "2s"}
    with running_farm(tmp_path, keys, webhook_workers=1) as farm:
        farm.create_user("kim")
        browser = farm.browser()
        browser.log_in("kim")
        at_todo = page_with(farm, browser, "todo", "/create")
        assert set(every_process(farm, "todo", at_todo)) == {200}
        front = browser.get(farm.origins["meta"] + "/")
        out = browser.post(
            farm.origins["meta"] + "/logout",
            data={"csrf_token": csrf_of(front.text)},
            headers={"Origin": farm.origins["meta"]},
        )
        assert out.status_code == 200, out.text[:2000]
        held_everywhere(farm, "todo", at_todo, 302)


# -- signing keys ----------------------------------------------------------------------------------


def test_an_emergency_key_rotation_holds_at_every_meta_process_at_once(tmp_path: Path) -> None:
    """operators.md, Rotating keys: "`rotate --at-once` retires the current keys now and
    signs with the new ones from the next token on" -- at every worker of every running
    instance of meta, not just in the command's own process (which once left each running
    process signing with the leaked key for up to a minute)."""
    import json
    import subprocess

    def kid(token: str) -> str:
        head = token.split(".")[0]
        found: str = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
        return found

    with running_farm(tmp_path, {}, webhook_workers=0, run=("meta",)) as farm:

        def signed_by(base: str) -> str:
            # todo's own token (client credentials), from one process of one instance.
            answer = requests.post(
                base + "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("todo", farm.client_secret("todo")),
                headers={"Connection": "close"},
                timeout=WITHIN,
            )
            assert answer.status_code == 200, answer.text
            return kid(answer.json()["access_token"])

        # The first token makes the first key; then every process signs with it.
        leaked = signed_by(farm.instances["meta"][0])
        assert set(every_process(farm, "meta", signed_by)) == {leaked}
        rotated = subprocess.run(
            [*KEYS_COMMAND, "rotate", "--at-once", "--config", str(farm.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        (new,) = re.findall(r"new signing key (\S+) \(EdDSA\)", rotated.stdout)
        for _ in range(3):
            assert set(every_process(farm, "meta", signed_by)) == {new}, leaked
