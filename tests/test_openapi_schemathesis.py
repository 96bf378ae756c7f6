"""Acceptance: schemathesis drives meta's, todo's and paste's APIs from their own OpenAPI
documents, with a token holding every scope of the service, and its default checks pass:
no 5xx, every status code documented, every body and header as the document says.

Each operation is called with generated input, half the time at the real rows (alice's
tracker, ticket, paste or token, her webhook and one of its deliveries) so the successful
answers are checked too, not only the 404s. Runs on SQLite and PostgreSQL; examples are
derandomized and bounded.

The webhook routes subscribe generated URLs, and subscribing looks the URL's host up.
Nothing may leave this machine, so the app looks names up with :func:`_no_lookup`, which
resolves every name to nothing without asking DNS (the subscribe check then accepts it;
address literals are still judged by the address policy), and ``socket.getaddrinfo``
itself refuses (and the test fails on) any name but a loopback one. Nothing is
delivered: no worker runs, and the dispatcher only records its nudges.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from srcore.outbound.targets import set_resolver
from srcore.testing import create_user

SERVICES = ["meta", "todo", "paste"]
#: Two checks judge the server's choice of what to accept rather than its answers.
#: "Schema-valid data is accepted" cannot hold where validity is not a matter of shape:
#: a cursor is opaque (only one the listing made is valid), a tracker name must be free,
#: a paste must not be blank; those answers are documented 400s and 409s. "Schema-invalid
#: data is refused" would refuse unknown query parameters, which HTTP APIs ignore. The
#: invalid input is still sent: every answer to it is checked like any other.
EXCLUDED = [positive_data_acceptance, negative_data_rejection]
#: Reads that cannot succeed with a user's token: looking users up is for services.
NO_SUCCESS = {("meta", "GET /api/users/{user_id}")}
#: Generated requests per operation and generation mode.
EXAMPLES = 12


@pytest.fixture(scope="module", params=SERVICES)
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _seed(app: Any, service: str, make_token: Any) -> tuple[str, dict[str, Any]]:
    """A token of alice's with every scope of the service, and the path values of her rows.

    meta checks the tokens it signed itself, so there alice's token is a personal access
    token meta made; the other services trust the test signing key.
    """
    st_ = app.extensions["srcore"]
    alice = create_user(app, "alice", **({"password_hash": "x"} if service == "meta" else {}))
    if service == "meta":
        from meta.oauth.pats import create_token

        from srcore.db import session

        with app.app_context():
            row, token = create_token(
                session.merge(alice), name="seeded", scope=_full_scope(app), days=1
            )
            session.commit()
            return token, {"token_id": row.id, "user_id": alice.id}
    if service == "todo":
        from todo import logic
        from todo.models import Tracker

        with st_.db.transaction() as session:
            tracker = Tracker(owner_id=alice.id, name="bugs")
            session.add(tracker)
            session.flush()
            logic.create_ticket(session, tracker, session.merge(alice), {"title": "crash"})
        return make_token(_full_scope(app), user=alice), {"name": "bugs", "number": 1}
    from paste.models import Paste

    with st_.db.transaction() as session:
        session.add(Paste(owner_id=alice.id, text="hello", short_id="seededpst2"))
    return make_token(_full_scope(app), user=alice), {"short_id": "seededpst2"}


def _seed_webhook(app: Any, token: str) -> dict[str, Any]:
    """A webhook of alice's to one of the service's events, set up by *token*'s client, and a
    failed delivery of it with one attempt (so the log's answers hold an attempt to check)."""
    import base64
    import json

    from sqlalchemy import select

    from srcore.webhooks.models import Attempt, Delivery, Subscription
    from srcore.webhooks.outbox import insert_event

    st_ = app.extensions["srcore"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    event = st_.manifest.user_events[0].name
    with st_.db.transaction() as session:
        owner_id = session.scalar(
            select(st_.user_model.id).where(st_.user_model.username == "alice")
        )
        sub = Subscription(
            owner_id=owner_id,
            client_id=claims["client_id"],  # the token's client: it sees it
            url="https://hooks.example.invalid/seeded",
            events=event,
            scopes=_full_scope(app),
            secret="whsec_" + "s" * 32,
            enabled=True,
        )
        session.add(sub)
        session.flush()
        outbox_id = insert_event(session, event, {"id": 1}, owner_id=owner_id)
        delivery = Delivery(subscription_id=sub.id, outbox_id=outbox_id, status="failed")
        session.add(delivery)
        session.flush()
        session.add(
            Attempt(
                delivery_id=delivery.id,
                request_headers=json.dumps({"webhook-id": delivery.message_id}),
                request_body="{}",
                response_status=500,
                response_headers=json.dumps({"content-type": "text/plain"}),
                response_body="it broke",
            )
        )
        return {"subscription_id": sub.id, "delivery_id": delivery.id}


def _no_lookup(host: str, port: int, timeout: float) -> None:
    """Every name resolves to nothing, and no DNS query is sent."""
    return None


class _Undelivered:
    """A dispatcher that only records what it is told: no worker, no Celery task."""

    def __init__(self) -> None:
        self.nudged: list[int] = []

    def nudge(self, outbox_ids: Any) -> None:
        self.nudged.extend(outbox_ids)


class _NoDNS:
    """Stands in for ``socket.getaddrinfo``: loopback names and literals only; any other
    name is noted and fails to resolve, so nothing the run does can ask a DNS server."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.asked: list[str] = []

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        import ipaddress
        import socket

        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            local = ipaddress.ip_address(name.split("%")[0]).is_loopback
        except ValueError:
            local = name == "localhost"
        if not local:
            self.asked.append(name)
            raise socket.gaierror(socket.EAI_NONAME, "no DNS queries in this test")
        return self.real(host, *args, **kwargs)


def _full_scope(app: Any) -> str:
    manifest = app.extensions["srcore"].manifest
    return " ".join(f"{manifest.id}/{scope.name}:RW" for scope in manifest.scopes)


def test_schemathesis_default_checks_pass(
    app: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import schemathesis
    from schemathesis import GenerationMode

    service = app.extensions["srcore"].service_id
    token, real = _seed(app, service, make_token)
    set_resolver(app, _no_lookup)
    app.extensions["srcore.webhooks"].dispatcher = _Undelivered()
    no_dns = _NoDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    real.update(_seed_webhook(app, token))
    headers = {"Authorization": f"Bearer {token}"}
    # A body the description cannot make valid by itself: ``events`` is read raw (a list
    # of the service's event names), so generated ones are all refused.
    valid_bodies = {
        "POST /api/webhooks": {
            "url": "https://hooks.example.invalid/made",
            "events": [app.extensions["srcore"].manifest.user_events[0].name],
        }
    }
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Reads first, deletions last, and the deepest paths first among writes of a kind:
    # changing a tracker's name or deleting it moves the rows the others are called at.
    order = ["GET", "POST", "PATCH", "DELETE"]
    operations.sort(key=lambda op: (order.index(op.method.upper()), -len(op.path), op.path))
    assert operations
    failures: list[str] = []
    succeeded: set[str] = set()
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        names = {p.name for p in operation.path_parameters}
        at_rows = {name: real[name] for name in names if name in real}
        strategies = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))
            if at_rows:
                strategies.append(
                    operation.as_strategy(generation_mode=mode, path_parameters=at_rows)
                )
        if label in valid_bodies:
            strategies.append(operation.as_strategy(body=valid_bodies[label]))

        @settings(
            max_examples=EXAMPLES * len(strategies),
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(strategies))
        def call(case: Any) -> None:
            response = case.call(headers=headers)
            if 200 <= response.status_code < 300:
                succeeded.add(label)
            case.validate_response(response, headers=headers, excluded_checks=EXCLUDED)

        try:
            call()
        except BaseException as exc:  # every operation's failure, not only the first
            if not isinstance(exc, Exception | BaseExceptionGroup):
                raise
            failures.append(f"{label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert no_dns.asked == [], "the run asked DNS for these names"
    # The answers checked include the successful ones, not only errors.
    reads = {f"GET {op.path}" for op in operations if op.method.upper() == "GET"}
    assert reads - succeeded - {label for sid, label in NO_SUCCESS if sid == service} == set()
