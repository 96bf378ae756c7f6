"""An outsider's client of meta's, todo's and paste's APIs, made from their OpenAPI documents
alone, with a tool srcore does not use: ``openapi-core`` judges each document against the
OpenAPI 3.1 schema, then every request the client sends and every answer it gets against
the document it fetched.

schemathesis (``test_openapi_schemathesis.py``) sends what the document allows; this
client sends what a client would: a PATCH of nothing and a rotation with no body, a
read with a read-write token, calls at the URL the document names when the service is
mounted under a path (``SCRIPT_NAME``). Each service is walked through creating, reading,
changing, paging through and deleting its things and webhooks, and a 4xx of each kind,
and each call must be one the document describes, answered as it says, with a token its
security allows. Nothing is delivered: the webhook dispatcher only records its nudges.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder

from srcore.testing import create_user

#: Where each service is mounted: todo and paste under a path, as behind a proxy that
#: sets SCRIPT_NAME; meta at the root of its origin.
MOUNTS = {"meta": "", "todo": "/todo", "paste": "/tools/paste"}


@pytest.fixture(scope="module", params=sorted(MOUNTS))
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class _Undelivered:
    """A dispatcher that only records what it is told: no worker, no Celery task."""

    def __init__(self) -> None:
        self.nudged: list[int] = []

    def nudge(self, outbox_ids: Any) -> None:
        self.nudged.extend(outbox_ids)


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any


@dataclass
class Client:
    """What a generated client does: fetch the document at the service's address, join
    each operation's path to the document's server URL, send the token; and here, judge
    each exchange by the document."""

    app: Any
    origin: str
    mount: str
    token: str
    scopes: frozenset[str]
    document: dict[str, Any] = field(init=False)
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        http = self.app.test_client()
        answer = http.get("/api/openapi.json", base_url=self.origin + self.mount)
        assert answer.status_code == 200
        self.document = answer.get_json()
        # Refused unless valid against the OpenAPI 3.1 schema, every $ref resolving
        # (openapi-core checks it with openapi-spec-validator).
        self.spec = OpenAPI.from_dict(self.document)
        self.server = self.document["servers"][0]["url"]

    def call(
        self,
        method: str,
        path: str,
        *,
        token: tuple[str, frozenset[str]] | None = None,
        malformed: bool = False,
        **options: Any,
    ) -> Answer:
        """Send *method* to the server URL + *path*, as described by the document; a
        *malformed* request is one the document does not allow (its answer is judged)."""
        secret, scopes = token or (self.token, self.scopes)
        label = f"{method} {path}"

        def build() -> Any:
            headers = {"Authorization": f"Bearer {secret}"} if secret else {}
            # base_url holds the server's path: the request's SCRIPT_NAME, as a proxy sets.
            return EnvironBuilder(
                path, base_url=self.server, method=method, headers=headers, **options
            )

        response = self.app.test_client().open(build())
        request = WerkzeugOpenAPIRequest(build().get_request())
        if not malformed:
            try:
                with warnings.catch_warnings():
                    # openapi-core checks that an OAuth 2.0 token is sent by no means
                    # but this test's own (the scopes, below); it says so each time.
                    warnings.filterwarnings("ignore", "Unsupported scheme type", UserWarning)
                    self.spec.validate_request(request)
            except Exception as exc:
                self.problems.append(f"{label}: the request: {_why(exc)}")
        try:
            self.spec.validate_response(request, WerkzeugOpenAPIResponse(response))
        except Exception as exc:
            self.problems.append(f"{label} -> {response.status_code}: the answer: {_why(exc)}")
        answer = Answer(response.status_code, response.get_json(silent=True), response.headers)
        operation = self._operation(method, path)
        if operation is None:
            self.problems.append(f"{label}: no operation of the document")
            return answer
        requirements = operation[1].get("security", [])
        allowed = not requirements or any(
            set(scopes) >= set(needed)
            for requirement in requirements
            for needed in requirement.values()
        )
        if 200 <= answer.status < 300:
            self.seen.add((method, operation[0], answer.status))
            if not allowed:
                self.problems.append(
                    f"{label} -> {answer.status} with {sorted(scopes)}, but its security "
                    f"asks for one of {requirements}"
                )
        # Refused for the token's scopes alone (not for a scope an input field asks for):
        # the document must not have let a client think the token enough.
        challenge = answer.headers.get("WWW-Authenticate", "")
        if (
            answer.status == 403
            and 'error="insufficient_scope"' in challenge
            and not any("field" in error for error in answer.body["errors"])
            and allowed
        ):
            self.problems.append(
                f"{label} -> 403 ({challenge}) with {sorted(scopes)}, which its security "
                f"allows: {requirements}"
            )
        return answer

    def _operation(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        path = path.split("?", 1)[0]
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
            if re.fullmatch(pattern, path) and method.lower() in item:
                return template, item[method.lower()]
        return None

    def pages(self, path: str, limit: int) -> list[Any]:
        """Every row of a cursor listing, following ``next`` as the document says."""
        rows: list[Any] = []
        cursor: str | None = None
        for _ in range(50):
            query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = self.call("GET", path, query_string=query)
            assert page.status == 200, page.body
            assert len(page.body["results"]) <= limit
            rows += page.body["results"]
            cursor = page.body["next"]
            if cursor is None:
                return rows
        raise AssertionError(f"{path} did not end in 50 pages")


def _why(exc: BaseException) -> str:
    causes = [repr(exc)]
    while exc.__cause__ is not None and len(causes) < 4:
        exc = exc.__cause__
        causes.append(repr(exc)[:400])
    return " <- ".join(causes)


#: A scope of a service none of the tested ones is.
FOREIGN = frozenset({"list/mails:RW"})


def _scopes(app: Any, access: str) -> frozenset[str]:
    manifest = app.extensions["srcore"].manifest
    return frozenset(f"{manifest.id}/{scope.name}:{access}" for scope in manifest.scopes)


def _tokens(app: Any, service: str, make_token: Any) -> tuple[Any, dict[str, str]]:
    """alice, and her tokens with every scope of the service read-write, read-only, and
    with only a scope of another service."""
    alice = create_user(app, "alice", **({"password_hash": "x"} if service == "meta" else {}))
    tokens = {}
    for access in ("RW", "RO", "foreign"):
        scope = " ".join(sorted(_scopes(app, access) if access != "foreign" else FOREIGN))
        if service == "meta":
            # meta checks the tokens it signed itself: personal access tokens of hers.
            from meta.oauth.pats import create_token

            from srcore.db import session

            with app.app_context():
                _, tokens[access] = create_token(
                    session.merge(alice), name=access, scope=scope, days=1
                )
                session.commit()
        else:
            tokens[access] = make_token(scope, user=alice)
    return alice, tokens


def _walk_todo(api: Client, read_only: tuple[str, frozenset[str]]) -> None:
    made = api.call("POST", "/api/trackers", json={"name": "bugs", "description": None})
    assert made.status == 201, made.body
    assert api.call("POST", "/api/trackers", json={"name": "bugs"}).status == 409
    assert api.call("GET", "/api/trackers/bugs").body["visibility"] == "public"
    changed = api.call("PATCH", "/api/trackers/bugs", json={"visibility": "unlisted"})
    assert changed.body["visibility"] == "unlisted"
    assert api.call("PATCH", "/api/trackers/bugs").status == 200  # nothing to change
    for number in range(5):
        sent = api.call("POST", "/api/trackers/bugs/tickets", json={"title": f"crash {number}"})
        assert sent.status == 201, sent.body
    resolved = {"status": "resolved", "resolution": "fixed"}
    assert api.call("PATCH", "/api/trackers/bugs/tickets/1", json=resolved).status == 200
    assert api.call("GET", "/api/trackers/bugs/tickets/1").body["resolution"] == "fixed"
    assert api.call("POST", "/api/trackers/bugs/tickets/1/comments", json={"text": "hi"}).status
    assert len(api.pages("/api/trackers/bugs/tickets/1/comments", 1)) == 1
    numbers = [t["number"] for t in api.pages("/api/trackers/bugs/tickets", 2)]
    assert sorted(numbers) == [1, 2, 3, 4, 5]
    open_ = api.call("GET", "/api/trackers/bugs/tickets", query_string={"status": "open"})
    assert len(open_.body["results"]) == 4
    assert [t["name"] for t in api.pages("/api/trackers", 1)] == ["bugs"]
    assert api.call("GET", "/api/trackers/bugs", token=read_only).status == 200
    assert api.call("DELETE", "/api/trackers/bugs", token=read_only).status == 403
    bad = api.call("GET", "/api/trackers/bugs/tickets", query_string={"cursor": "x"})
    assert bad.status == 400
    assert api.call("GET", "/api/trackers/bugs/tickets/99").status == 404
    assert api.call("POST", "/api/trackers", json={"name": ""}).status == 400
    assert api.call("DELETE", "/api/trackers/bugs").status == 204
    assert api.call("GET", "/api/trackers/bugs").status == 404


def _walk_paste(api: Client, read_only: tuple[str, frozenset[str]]) -> None:
    ids = []
    for number in range(3):
        sent = api.call("POST", "/api/pastes", json={"text": f"hello {number}", "title": None})
        assert sent.status == 201, sent.body
        ids.append(sent.body["id"])
    assert api.call("GET", f"/api/pastes/{ids[0]}", token=read_only).body["text"] == "hello 0"
    assert sorted(p["id"] for p in api.pages("/api/pastes", 2)) == sorted(ids)
    found = api.call("GET", "/api/pastes", query_string={"search": '"hello 1"'})
    assert [p["id"] for p in found.body["results"]] == [ids[1]]
    assert api.call("POST", "/api/pastes", json={"text": "x"}, token=read_only).status == 403
    assert api.call("POST", "/api/pastes", json={"text": " "}).status == 400
    assert api.call("GET", "/api/pastes/nothinghere").status == 404


def _walk_meta(api: Client, read_only: tuple[str, frozenset[str]]) -> None:
    profile = api.call("GET", "/api/profile", token=read_only)
    assert profile.body["username"] == "alice"
    made = api.call("POST", "/api/tokens", json={"name": "ci", "scopes": ["meta/profile:RO"]})
    assert made.status == 201, made.body
    listed = api.call("GET", "/api/tokens").body["results"]
    assert made.body["id"] in [t["id"] for t in listed]
    assert api.call("POST", "/api/tokens", json={"name": "x"}, token=read_only).status == 403
    nameless = {"scopes": ["meta/profile:RO"]}
    assert api.call("POST", "/api/tokens", json=nameless, malformed=True).status == 400
    assert api.call("DELETE", f"/api/tokens/{made.body['id']}").status == 204
    assert api.call("DELETE", "/api/tokens/999999").status == 404
    # Looking users up is for services: a user's token is refused.
    assert api.call("GET", f"/api/users/{profile.body['id']}").status == 403


def _walk_webhooks(api: Client, event: str, foreign: tuple[str, frozenset[str]]) -> None:
    # A token holding no scope of this service is refused (meta makes its own tokens for
    # the service their scopes name: one with none of meta's is not meta's to take).
    refused = api.call("GET", "/api/webhooks", token=foreign).status
    assert refused == (401 if api.document["info"]["title"] == "Meta API" else 403)
    assert api.call("GET", "/api/webhooks/events", token=("", frozenset())).status == 200
    no_token = api.call("GET", "/api/webhooks", token=("", frozenset()), malformed=True)
    assert no_token.status == 401
    made = []
    for number in range(3):
        url = f"https://hooks.example.invalid/{number}"
        sent = api.call("POST", "/api/webhooks", json={"url": url, "events": [event]})
        assert sent.status == 201, sent.body
        made.append(sent.body["id"])
    assert sorted(s["id"] for s in api.pages("/api/webhooks", 2)) == sorted(made)
    sid = made[0]
    assert api.call("GET", f"/api/webhooks/{sid}").body["events"] == [event]
    assert api.call("PATCH", f"/api/webhooks/{sid}").status == 200  # nothing to change
    rotated = api.call("POST", f"/api/webhooks/{sid}/rotate")  # the default overlap
    assert rotated.status == 200 and rotated.body["previous_secret_expires"]
    assert api.call("POST", f"/api/webhooks/{sid}/rotate", json={"overlap": 0}).status == 200
    ping = api.call("POST", f"/api/webhooks/{sid}/ping")
    assert ping.status == 202, ping.body
    assert api.call("POST", f"/api/webhooks/{sid}/ping").status == 429
    log = api.pages(f"/api/webhooks/{sid}/deliveries", 1)
    assert [d["event"] for d in log] == ["ping"]
    again = api.call("POST", f"/api/webhooks/{sid}/deliveries/{log[0]['id']}/redeliver")
    assert again.status in (202, 409), again.body
    assert api.call("PATCH", f"/api/webhooks/{sid}", json={"enabled": False}).status == 200
    assert api.call("POST", f"/api/webhooks/{sid}/ping").status == 409
    bad = api.call("POST", "/api/webhooks", json={"url": "ftp://x.invalid/", "events": [event]})
    assert bad.status == 400
    broken = api.call(
        "POST", "/api/webhooks", data="{", content_type="application/json", malformed=True
    )
    assert broken.status == 400
    assert api.call("DELETE", f"/api/webhooks/{sid}").status == 204
    assert api.call("GET", f"/api/webhooks/{sid}").status == 404


WALKS = {"meta": _walk_meta, "todo": _walk_todo, "paste": _walk_paste}


def test_a_client_made_from_the_document_round_trips(app: Any, make_token: Any) -> None:
    st = app.extensions["srcore"]
    service = st.service_id
    app.extensions["srcore.webhooks"].dispatcher = _Undelivered()
    _, tokens = _tokens(app, service, make_token)
    api = Client(
        app,
        origin=str(st.section["origin"]),
        mount=MOUNTS[service],
        token=tokens["RW"],
        scopes=_scopes(app, "RW"),
    )
    assert api.server == str(st.section["origin"]).rstrip("/") + MOUNTS[service]
    read_only = (tokens["RO"], _scopes(app, "RO"))
    WALKS[service](api, read_only)
    _walk_webhooks(api, st.manifest.user_events[0].name, (tokens["foreign"], FOREIGN))
    assert api.problems == [], "\n".join(api.problems)
    # Every operation of the document answered successfully once, but looking users up.
    described = {
        (method.upper(), path)
        for path, item in api.document["paths"].items()
        for method in item
        if not path.endswith(("/openapi.json", "/docs", "/users/{user_id}"))
    }
    assert described - {(method, path) for method, path, _ in api.seen} == set()
