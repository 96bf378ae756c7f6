"""What README.md, config.example.ini and docs/ promise about write rate limits, clocks,
session cookies, pending logins and new services' names, each checked against the code.

The other tests of these features check behaviour; these check the sentences an operator
or a service author reads: the numbers they quote, the names they list, the exceptions
they name. A test here fails when the code and the text drift apart, whichever moved.
"""

from __future__ import annotations

import configparser
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_meta import FakeMeta, build_service
from joserfc.jwk import KeySet

from srcore.config import load_config
from srcore.config.declarations import GLOBAL_KEYS, SERVICE_KEYS
from srcore.identity.protocol import CLOCK_LEEWAY

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
OPERATORS = (REPO / "docs" / "operators.md").read_text(encoding="utf-8")
SECURITY = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
TUTORIAL = (REPO / "docs" / "tutorial.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    """*text* with its line breaks and runs of spaces made single spaces."""
    return " ".join(text.split())


# -- config.example.ini: a value written out is the default it stands for --------------------


def _example_values() -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), default_section="\n"
    )
    parser.read_string((REPO / "config.example.ini").read_text(encoding="utf-8"))
    return {section: dict(parser[section]) for section in parser.sections()}


#: Keys the example sets to something other than the default on purpose.
EXAMPLE_NOT_DEFAULT = {("global", "site-name")}


def test_every_value_the_example_file_writes_out_is_the_declared_default() -> None:
    """config.example.ini is "every key, commented": a number written there that is not
    the default (60/minute where the code says 30/minute) misleads whoever copies it."""
    environ = {"SRCORE__META__SECRET_KEY": "a" * 40, "SRCORE__TODO__SECRET_KEY": "b" * 40}
    config = load_config(REPO / "config.example.ini", specs={}, environ=environ)
    written = _example_values()
    checked = []
    for section, keys in (("global", GLOBAL_KEYS), ("meta", SERVICE_KEYS)):
        values = config.global_ if section == "global" else config.section(section)
        for key in keys:
            text = written[section].get(key.name, "")
            if (
                not text.strip()
                or key.default is None
                or (section, key.name) in EXAMPLE_NOT_DEFAULT
            ):
                continue
            assert values[key.name] == key.default, (section, key.name, text)
            checked.append(key.name)
    assert {"write-rate-limit", "render-cache-size", "webhook-retry-schedule"} <= set(checked)


# -- write rate limits (README, config reference) --------------------------------------------


def test_the_readme_quotes_the_default_write_limit() -> None:
    (key,) = [k for k in GLOBAL_KEYS if k.name == "write-rate-limit"]
    default = ", ".join(key.default)
    assert f"(default `{default}`;" in _flat(README)
    assert default in key.help


def test_the_names_the_readme_imports_from_srcore_ratelimit_are_public() -> None:
    import srcore.ratelimit

    (line,) = [row for row in README.splitlines() if row.startswith("from srcore.ratelimit")]
    names = [name.strip() for name in line.split("import", 1)[1].split(",")]
    assert names == ["exempt", "exempt_endpoints", "write_limit"]
    for name in names:
        assert name in srcore.ratelimit.__all__ and callable(getattr(srcore.ratelimit, name))


@pytest.fixture
def fake() -> FakeMeta:
    return FakeMeta()


@pytest.fixture
def limited(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    """The sample service with a metrics page and a write limit of 2 a minute."""
    app = build_service(
        tmp_path,
        fake,
        service_extra="metrics-path = /internal/metrics\nwrite-rate-limit = 2/minute\n",
    )
    app.config.update(TESTING=True, WTF_CSRF_ENABLED=False)
    yield app
    app.extensions["srcore"].db.dispose()


def test_srcore_leaves_the_endpoints_the_readme_names_alone(limited: Any) -> None:
    """The README: "srcore leaves meta's pushes, /logout, /healthz and metrics alone".
    Each name in the exempt list is an endpoint the app really has, so none is exempt in
    name only."""
    from srcore.ratelimit import SRCORE_EXEMPT, write_limits

    rules = {rule.endpoint: rule.rule for rule in limited.url_map.iter_rules()}
    assert {rules[name] for name in SRCORE_EXEMPT} == {
        "/_srcore/events",
        "/logout",
        "/healthz",
        "/internal/metrics",
    }
    assert write_limits(limited).exempt >= SRCORE_EXEMPT
    client = limited.test_client()
    assert [client.post("/logout").status_code < 400 for _ in range(4)] == [True] * 4


def test_exempt_endpoints_leaves_a_view_registered_elsewhere_uncounted(limited: Any) -> None:
    """The README's ``exempt_endpoints(app, "oauth.token")``: by endpoint name, for a view
    the service did not decorate; the other writes are still counted."""
    from srcore.ratelimit import exempt_endpoints

    limited.add_url_rule("/elsewhere", "elsewhere.hook", lambda: "ok", methods=["POST"])
    exempt_endpoints(limited, "elsewhere.hook")
    client = limited.test_client()
    assert {client.post("/elsewhere").status_code for _ in range(5)} == {200}
    assert [client.post("/form").status_code for _ in range(3)] == [200, 200, 429]


def test_the_test_plugins_configs_turn_the_limits_off(app: Any) -> None:
    """The README: "The test plugin's configs set write-rate-limit = off"."""
    from srcore.ratelimit import write_limits

    assert not write_limits(app).enabled
    assert "write-rate-limit = off" in Path(app.extensions["srcore"].config.path).read_text()


# -- clocks (operators.md) ---------------------------------------------------------------------

META_NOW = 1_800_000_000
LIFETIME = 600


@pytest.mark.parametrize("ahead", [CLOCK_LEEWAY + 1, 120, 300])
def test_a_service_ahead_refuses_a_token_its_skew_less_the_leeway_before_expiry(
    ahead: int,
) -> None:
    """operators.md: a service N s ahead of meta refuses each token N - 30 s before it
    expires by meta's clock."""
    from joserfc.jwk import OKPKey

    from srcore.auth import jose
    from srcore.auth.tokens import StaticKeySource, TokenError, TokenVerifier

    key = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
    meta_now = [float(META_NOW)]
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([key])),
        issuer="https://meta.example.org",
        audience="todo",
        clock=lambda: meta_now[0] + ahead,
    )
    claims = {
        "iss": "https://meta.example.org",
        "sub": "7",
        "aud": "todo",
        "client_id": "app",
        "scope": "",
        "iat": META_NOW,
        "exp": META_NOW + LIFETIME,
        "jti": "j1",
    }
    token = jose.sign(claims, key, typ="at+jwt")
    meta_now[0] = META_NOW + LIFETIME - (ahead - CLOCK_LEEWAY)
    verifier.verify(token)
    meta_now[0] += 1
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token)


def test_the_numbers_of_the_clock_paragraph_are_the_codes() -> None:
    """The leeway, the push timestamp's window and the logout token's lifetime, as
    operators.md quotes them."""
    from meta.oauth.backchannel import LOGOUT_TOKEN_LIFETIME, logout_claims

    from srcore.signatures import DEFAULT_TOLERANCE

    text = _flat(OPERATORS)
    assert f"srcore tolerates {CLOCK_LEEWAY} s" in text
    assert f"from {CLOCK_LEEWAY} s before its `iat` to {CLOCK_LEEWAY} s after its `exp`" in text
    assert f"more than {CLOCK_LEEWAY} s behind meta" in text
    assert f"N \N{MINUS SIGN} {CLOCK_LEEWAY} s before it expires" in text
    assert timedelta(minutes=5) == DEFAULT_TOLERANCE
    assert "signed timestamp checked within 5 minutes" in text
    assert f"Logout tokens for OpenID clients live {LOGOUT_TOKEN_LIFETIME} s" in text
    claims = logout_claims(issuer="https://meta.test", client_id="c", sub="1", sid=None)
    assert claims["exp"] - claims["iat"] == LOGOUT_TOKEN_LIFETIME == 120


@pytest.mark.parametrize(("age", "status"), [(4 * 60, 204), (6 * 60, 401)])
def test_a_push_is_taken_within_five_minutes_of_its_timestamp(
    tmp_path: Path, fake: FakeMeta, age: int, status: int
) -> None:
    """operators.md: "meta's pushes carry a signed timestamp checked within 5 minutes:
    past that they are refused" (a minute either side of the bound, so a slow run cannot
    cross it)."""
    app = build_service(tmp_path, fake)
    try:
        good = [{"seq": 1, "kind": "token", "subject": "j"}]
        headers, body = fake.push(good, timestamp=int(time.time()) - age)
        answer = app.test_client().post("/_srcore/events", data=body, headers=headers)
        assert answer.status_code == status, answer.get_data(as_text=True)
        if status == 401:
            assert "tolerance" in answer.get_json()["errors"][0]["reason"]
    finally:
        app.extensions["srcore"].db.dispose()


# -- session cookies and pending logins (security.md, operators.md) ---------------------------


def test_a_service_that_sets_a_cookie_domain_keeps_the_plain_name(
    tmp_path: Path, fake: FakeMeta
) -> None:
    """operators.md: "A service whose code sets SESSION_COOKIE_DOMAIN keeps the plain
    name" (a browser refuses a __Host- cookie with a Domain)."""
    from test_cookie_tossing import HTTPS, build

    app = build(tmp_path, fake, HTTPS)
    try:
        assert app.session_interface.get_cookie_name(app) == "__Host-sample_session"
        app.config["SESSION_COOKIE_DOMAIN"] = "example.test"
        assert app.session_interface.get_cookie_name(app) == "sample_session"
    finally:
        app.extensions["srcore"].db.dispose()
    assert "sets `SESSION_COOKIE_DOMAIN` keeps the plain name" in _flat(OPERATORS)


def test_pending_logins_keep_at_most_five_entries_and_1024_characters(
    tmp_path: Path, fake: FakeMeta
) -> None:
    """security.md: logins started and not finished "keep at most five entries and 1024
    characters of return paths in the cookie between them"."""
    from srcore.auth.oauth_client import _PENDING

    app = build_service(tmp_path, fake)
    try:
        client = app.test_client()
        for n in range(8):
            assert client.get(f"/login?next=/private?tab={n}").status_code == 302
        with client.session_transaction() as session:
            pending = dict(session[_PENDING])
        assert len(pending) == 5
        # The newest five are kept.
        assert sorted(entry[1] for entry in pending.values()) == [
            f"/private?tab={n}" for n in range(3, 8)
        ]
        for _ in range(3):
            client.get("/login?next=/" + "p" * 400)
        with client.session_transaction() as session:
            pending = dict(session[_PENDING])
        assert sum(len(entry[1]) for entry in pending.values()) <= 1024
        assert len(pending) == 2
    finally:
        app.extensions["srcore"].db.dispose()
    assert "keep at most five entries and 1024 characters of return paths" in _flat(SECURITY)


# -- new-service names (tutorial.md) ---------------------------------------------------------


def _tutorial_names_paragraph() -> str:
    start = TUTORIAL.index("The name is the service's id everywhere")
    return _flat(TUTORIAL[start : TUTORIAL.index("\n\n", start)])


@pytest.mark.parametrize(
    "name",
    [
        *("email", "json", "flask", "celery", "pytest", "global", "srcore-blog", "api"),
        *("tests", "webhooks", "globals", "beta", "class", "meta"),
    ],
)
def test_every_name_the_tutorial_says_is_refused_is_refused(name: str) -> None:
    from srcore.scaffold import ScaffoldError, check_name

    shown = "srcore-..." if name.startswith("srcore-") else name
    assert f"`{shown}`" in _tutorial_names_paragraph() or name in {"class", "meta"}
    with pytest.raises(ScaffoldError) as refused:
        check_name(name, installed={"meta", "todo"})
    assert "; " in str(refused.value)  # what is wrong; what to pick instead


@pytest.mark.parametrize(
    ("name", "good"),
    [
        ("ab", True),
        ("a" * 32, True),
        ("my-blog2", True),
        ("a", False),
        ("a" * 33, False),
        ("2blog", False),
        ("blog-", False),
        ("my--blog", False),
        ("my_blog", False),
        ("Blog", False),
    ],
)
def test_the_shape_of_a_name_is_the_tutorials(name: str, good: bool) -> None:
    """The tutorial: "2 to 32 lower-case letters, digits and `-`, starting with a letter,
    with no `-` at the end or two together"."""
    from srcore.scaffold import ScaffoldError, check_name

    assert (
        "2 to 32 lower-case letters, digits and `-`, starting with a letter, "
        "with no `-` at the end or two together" in _tutorial_names_paragraph()
    )
    if good:
        check_name(name, importable=lambda _: False)
    else:
        with pytest.raises(ScaffoldError):
            check_name(name, importable=lambda _: False)


def test_the_scope_the_tutorial_names_is_the_generated_services() -> None:
    from srcore.scaffold import render_files

    assert "(`bookmarks/items:RO`)" in _tutorial_names_paragraph()
    manifest = render_files("bookmarks")["bookmarks/service.yaml"]
    assert re.search(r"^id: bookmarks$", manifest, re.MULTILINE), manifest
    assert re.search(r"^scopes:\n  - name: items$", manifest, re.MULTILINE), manifest


# -- todo's README: the page sizes it quotes -----------------------------------------------


def test_todo_readme_quotes_the_comments_a_ticket_page_shows() -> None:
    from todo.views import COMMENTS_PER_PAGE

    readme = (REPO / "example_services" / "todo" / "README.md").read_text(encoding="utf-8")
    assert f"its newest {COMMENTS_PER_PAGE} comments (older ones a page back)" in readme
    assert (
        "| `trackers-per-page` | int | 25 | trackers per page on the front page (yours," in readme
    )


def test_operators_guide_counts_the_write_limits_among_what_redis_shares() -> None:
    start = OPERATORS.index("## Redis")
    section = _flat(OPERATORS[start : OPERATORS.index("\n## ", start + 1)])
    assert "every service's `write-rate-limit`, count across every process and host" in section
