"""Outsider: meta, todo and paste with large tables stay cheap per request.

Each service's database is filled twice, straight to the tables (``tests/scale_fill.py``:
COPY on PostgreSQL, executemany on SQLite): a small volume, then up to twenty times it (on
PostgreSQL about 20,000 accounts, 2,000 trackers, 100,000 tickets, 200,000 comments,
50,000 pastes, 100,000 audit entries, 40,000 tokens and grants, 20,000 webhooks with
100,000 deliveries and 150,000 attempts). Every GET route of each app's url_map is opened
by alice, bob and nobody, at page 1 and a deep page (a numbered page well in, or the
next cursor):

- the statements a request executes (each one the driver is handed) are as many at both
  volumes and on every page (a page past the last sends fewer): a number growing with the
  rows is a query per row;
- on PostgreSQL, no statement's plan (``EXPLAIN``, nothing timed) reads a big table whole
  or sorts thousands of rows for a page: each is an index missing or a query the planner
  cannot serve from one. A count of a whole table (a numbered list's page count) and a
  substring search (docs/search.md) read their rows by nature, and are let through.

The webhook worker's claims and fan-out are explained the same way.
"""

from __future__ import annotations

import html
import importlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.exc import SAWarning

from srcore import migrate, testdb
from srcore.testing import _signing_key, log_in_client, mint_token, write_config
from tests.conftest import require_postgres
from tests.scale_fill import (
    ALICE,
    BOB,
    FILLS,
    LARGE,
    Ids,
    Volume,
    analyze,
    as_user,
    nodes,
    plan,
    service_app,
    statements,
)

#: (small, large) volumes: the second fill adds 19 and 4 times the first's rows.
VOLUMES = {
    "postgresql": (LARGE.scaled(0.05), LARGE.scaled(0.95)),
    "sqlite": (LARGE.scaled(0.05), LARGE.scaled(0.2)),
}
#: Tables whose sequential scan is a bug (at the large volume each has 10,000 rows or more).
MIN_BIG_ROWS = 10_000
#: A sort of more rows than this, for a page of at most 100, is a bug.
MAX_SORTED = 2_000

#: Routes that read no table (or only the app's own files): not probed.
NO_DATA = {
    "static",
    "srcore_static",
    "srcore_favicon",
    "srcore_well_known",
    "srcore_openapi.docs",
    "srcore_openapi.document",
    "srcore_login",
    "accounts.login",
    "accounts.register",
    "accounts.forgot",
    "accounts.confirm",
    "accounts.reset",
    "twofactor.verify",
    "oauth.authorize",
    "oauth.metadata",
    "oidc.configuration",
    "oidc.end_session",
    "oauth.revocations",  # a client's call with its secret: one indexed read by seq
}

NEXT = "next"

#: For each service, groups of paths that must each send the same number of statements
#: (per viewer, at both volumes): a page, a deep page of it, and ``NEXT`` (its next link).
PROBES: dict[str, list[list[str]]] = {
    "todo": [
        ["/", "/?page=2", NEXT],
        ["/~alice/big", "/~alice/big?page=3", NEXT],
        ["/~alice/big?status=all", "/~alice/big?status=all&page=5", NEXT],
        ["/~alice/big?status=resolved", "/~alice/big?status=resolved&page=2"],
        ["/~alice/big?search=crashes", NEXT],
        ["/~alice/big/1", NEXT],
        ["/~alice/big/2"],
        ["/~alice/big/settings"],
        ["/~alice/big/delete"],
        ["/~alice/big/new"],
        ["/~alice/big/1/edit"],
        ["/create"],
        ["/api/trackers", NEXT],
        ["/api/trackers/big"],
        ["/api/trackers/big/tickets", NEXT],
        ["/api/trackers/big/tickets?status=resolved", NEXT],
        ["/api/trackers/big/tickets/1"],
        ["/api/trackers/big/tickets/1/comments", NEXT],
    ],
    "paste": [
        ["/", "/?page=10", NEXT],
        ["/?search=hello", NEXT],
        ["/mine", "/mine?page=5", NEXT],
        ["/p/p000000001"],
        ["/p/p000000001/raw"],
        ["/p/p000000001/edit"],
        ["/p/p000000001/delete"],
        ["/new"],
        ["/api/pastes", NEXT],
        ["/api/pastes/p000000001"],
    ],
    "meta": [
        ["/"],
        ["/profile"],
        ["/email"],
        ["/password"],
        ["/delete"],
        ["/security"],
        ["/security/activity", "/security/activity?page=3", NEXT],
        ["/security/two-factor"],
        ["/security/passkeys"],
        ["/clients"],
        ["/admin/users", "/admin/users?page=5", NEXT],
        ["/admin/users?q=user", NEXT],
        ["/admin/users/3"],
        ["/admin/audit", "/admin/audit?page=10", NEXT],
        ["/admin/audit?user=alice", "/admin/audit?user=alice&page=3", NEXT],
        ["/admin/audit?kind=login", "/admin/audit?kind=login&page=3", NEXT],
        ["/api/profile"],
        ["/api/tokens"],
        ["/api/users/3"],
        ["/userinfo"],
        ["/oauth/jwks.json"],
    ],
}
#: Every service's webhook pages and API, and its health check.
COMMON = [
    ["/webhooks", NEXT],
    ["/webhooks/1", NEXT],
    ["/webhooks/2"],
    ["/webhooks/1/edit"],
    ["/webhooks/new"],
    ["/api/webhooks", NEXT],
    ["/api/webhooks/1"],
    ["/api/webhooks/1/deliveries", NEXT],
    ["/api/webhooks/events"],
    ["/healthz"],
]
SCOPES = {
    "todo": "todo/trackers:RW todo/tickets:RW",
    "paste": "paste/pastes:RW",
    "meta": "meta/profile:RO meta/tokens:RW",
}
_NEXT_LINK = re.compile(r'<a [^>]*href="([^"]+)"[^>]*rel="next"')
_COUNT = re.compile(r"^\s*SELECT count\(\*\)", re.IGNORECASE)
_SUBSTRING = re.compile(r"\b(strpos|instr)\(", re.IGNORECASE)


@dataclass
class Site:
    service: str
    backend: str
    app: Any
    metadata: MetaData
    key: Any
    ids: Ids
    tokens: dict[str, str]

    @property
    def engine(self) -> Any:
        return self.app.extensions["srcore"].db.engine

    def fill(self, volume: Volume) -> None:
        FILLS[self.service](self.engine, self.metadata, self.ids, volume)
        analyze(self.engine)

    def big_tables(self) -> set[str]:
        with self.engine.connect() as connection:
            counts = {
                name: connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                for name in self.metadata.tables
            }
        return {name for name, count in counts.items() if count >= MIN_BIG_ROWS}


def _tokens(site_app: Any, service: str, key: Any, audience: str) -> dict[str, str]:
    """A bearer token of alice and of bob, as the service accepts them."""
    if service != "meta":
        return {
            who: mint_token(key, audience=audience, scopes=SCOPES[service], user_id=uid)
            for who, uid in (("alice", ALICE), ("bob", BOB))
        }
    from meta.models import User
    from meta.oauth.pats import create_token

    from srcore.db import session

    made = {}
    with site_app.app_context():
        for who, uid in (("alice", ALICE), ("bob", BOB)):
            user = session.get(User, uid)
            _row, made[who] = create_token(user, name="scale", scope=SCOPES["meta"], days=1)
            session.commit()
    return made


@pytest.fixture(params=["todo", "paste", "meta"])
def service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        require_postgres()
    return name


@pytest.fixture
def site(service: str, backend: str, tmp_path: Path) -> Iterator[Site]:
    """*service*'s app on a database of its own, migrated and empty."""
    from srcore.manifest import load_manifest

    url = f"sqlite:///{tmp_path / 'scale.db'}"
    if backend == "postgresql":
        url = testdb.create_test_database(prefix="srcore_scale")
    manifest = load_manifest(service)
    config = write_config(tmp_path / "config.ini", service_id=manifest.id, database_url=url)
    body = config.read_text(encoding="utf-8")
    config.write_text(body.replace("[global]\n", "[global]\nlog-level = error\n", 1))
    key = _signing_key()
    app = service_app(service, config, key)
    state = app.extensions["srcore"]
    try:
        versions = Path(str(importlib.import_module(service).__file__)).parent / "migrations"
        target = migrate.MigrationTarget(
            service_id=manifest.id,
            database_url=url,
            metadata=state.metadata,
            versions_dir=versions / "versions",
        )
        migrate.upgrade_all(target)
        metadata = MetaData()
        with warnings.catch_warnings():  # SQLite cannot read meta's index on lower(email)
            warnings.simplefilter("ignore", SAWarning)
            metadata.reflect(state.db.engine)
        site = Site(service, backend, app, metadata, key, Ids(state.db.engine), {})
        yield site
    finally:
        state.db.dispose()
        if backend == "postgresql":
            testdb.drop_test_database(url)


def _client(site: Site, who: str, path: str) -> tuple[Any, dict[str, str]]:
    client = site.app.test_client()
    headers: dict[str, str] = {}
    if path.startswith("/api/") or path == "/userinfo":
        if who != "anonymous":
            headers["Authorization"] = f"Bearer {site.tokens[who]}"
    elif who != "anonymous":
        log_in_client(client, as_user(ALICE if who == "alice" else BOB))
    return client, headers


def _next_of(response: Any, path: str) -> str | None:
    """The page after *response*: its rel=next link, or the API's ``next`` cursor."""
    if response.is_json:
        body = response.get_json(silent=True)
        cursor = body.get("next") if isinstance(body, dict) else None
        if not cursor:
            return None
        base = path.split("?", 1)
        query = [p for p in base[1].split("&") if p] if len(base) > 1 else []
        return base[0] + "?" + "&".join([*query, f"cursor={cursor}"])
    found = _NEXT_LINK.search(response.get_data(as_text=True))
    return html.unescape(found.group(1)) if found else None


@dataclass
class Seen:
    status: int
    sent: int
    statements: list[tuple[str, Any]]


def _open(site: Site, who: str, path: str) -> tuple[Seen, str | None]:
    client, headers = _client(site, who, path)
    with statements(site.engine) as sent:
        response = client.get(path, headers=headers)
    try:
        status = response.status_code
        assert status < 500 or status == 503, (who, path, status)  # 503: no meta to log in at
        return Seen(status, sent.count, sent.statements), _next_of(response, path)
    finally:
        response.close()


def _walk(site: Site) -> dict[tuple[str, str], Seen]:
    """(viewer, path) -> what it sent, for every probe; ``NEXT`` followed from the first."""
    seen: dict[tuple[str, str], Seen] = {}
    for group in PROBES[site.service] + COMMON:
        for who in ("alice", "bob", "anonymous"):
            following: str | None = None
            for path in group:
                if path == NEXT:
                    if following is None:
                        continue
                    path = following
                    seen[(who, f"{group[0]} (next)")] = _open(site, who, path)[0]
                    continue
                result, after = _open(site, who, path)
                seen[(who, path)] = result
                if path == group[0]:
                    following = after
    return seen


def _plan_problems(site: Site, seen: dict[tuple[str, str], Seen], big: set[str]) -> list[str]:
    problems: set[str] = set()
    for (who, path), result in seen.items():
        for statement, parameters in result.statements:
            head = statement.lstrip()[:6].upper()
            if head not in ("SELECT", "WITH") or "pg_advisory" in statement:
                continue
            if _SUBSTRING.search(statement):
                continue  # a substring search reads what it searches (docs/search.md)
            tree = plan(site.engine, statement, parameters)
            for node in nodes(tree):
                relation = node.get("Relation Name")
                if node["Node Type"] == "Seq Scan" and relation in big:
                    if "Filter" not in node and _COUNT.match(statement):
                        continue  # the count of a whole table: a numbered list's last page
                    problems.add(f"{path} ({who}): Seq Scan on {relation}: {_short(statement)}")
                sorting = node["Node Type"] in ("Sort", "Incremental Sort")
                if sorting and node.get("Plan Rows", 0) > MAX_SORTED:
                    rows = node["Plan Rows"]
                    problems.add(f"{path} ({who}): Sort of {rows} rows: {_short(statement)}")
    return sorted(problems)


def _short(statement: str) -> str:
    return " ".join(statement.split())[:240]


def test_every_get_route_is_probed(service: str, tmp_path: Path) -> None:
    """The probes cover every GET route of the app's url_map (a new one must be added)."""
    from srcore.manifest import load_manifest

    manifest = load_manifest(service)
    config = write_config(
        tmp_path / "config.ini",
        service_id=manifest.id,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
    )
    app = service_app(service, config, _signing_key())
    probed = {p.split("?")[0] for group in PROBES[service] + COMMON for p in group if p != NEXT}
    missing = []
    with app.test_request_context():
        adapter = app.url_map.bind("localhost")
        endpoints = {adapter.match(path, method="GET")[0] for path in probed}
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or ()) and rule.endpoint not in NO_DATA | endpoints:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    assert not missing, f"GET routes no probe opens: {missing}"


def test_requests_stay_cheap_with_large_tables(site: Site) -> None:
    small, large = VOLUMES[site.backend]
    site.fill(small)
    site.tokens = _tokens(site.app, site.service, site.key, site.service)
    _walk(site)  # caches filled (meta's signing keys), as in a process serving for a while
    before = _walk(site)
    site.fill(large)
    after = _walk(site)
    grown = []
    for group in PROBES[site.service] + COMMON:
        for who in ("alice", "bob", "anonymous"):
            keys = [(who, p) for p in group if p != NEXT]
            if NEXT in group and (who, f"{group[0]} (next)") in after:
                keys.append((who, f"{group[0]} (next)"))
            counts = {
                f"{path} {volume}": seen[(who, path)].sent
                for volume, seen in (("small", before), ("large", after))
                for _who, path in keys
                if (who, path) in seen
            }
            # A page past the last one sends less (no rows to read): never more.
            first = before[(who, group[0])].sent
            if after[(who, group[0])].sent != first or max(counts.values()) > first:
                grown.append(f"{who}: {counts}")
    assert not grown, "statements per request grow with the data or the page:\n" + "\n".join(grown)
    if site.backend == "postgresql":
        problems = _plan_problems(site, after, site.big_tables())
        assert not problems, "plans that read a big table whole:\n" + "\n".join(problems)
        if site.service == "todo":
            _ticket_lookups_join_by_index(site, after)


def _ticket_lookups_join_by_index(site: Site, seen: dict[tuple[str, str], Seen]) -> None:
    """A ticket's page finds its ticket and submitter by index, as the planner chooses by
    itself: guessing many tickets of a big tracker for one number, it hashed every user."""
    for (who, path), result in seen.items():
        if not re.fullmatch(r"/~alice/big/\d+(/edit)?", path):
            continue
        for statement, parameters in result.statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            tree = plan(site.engine, statement, parameters, seqscan=True)
            scans = {n.get("Relation Name") for n in nodes(tree) if n["Node Type"] == "Seq Scan"}
            assert "user" not in scans, (who, path, _short(statement))
