"""Acceptance: schemathesis drives meta's, todo's and paste's APIs from their own OpenAPI
documents, with a token holding every scope of the service, and its default checks pass:
no 5xx, every status code documented, every body and header as the document says.

Each operation is called with generated input, half the time at the real rows (alice's
tracker, ticket, paste or token) so the successful answers are checked too, not only
the 404s. Runs on SQLite and PostgreSQL; examples are derandomized and bounded.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

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


def _full_scope(app: Any) -> str:
    manifest = app.extensions["srcore"].manifest
    return " ".join(f"{manifest.id}/{scope.name}:RW" for scope in manifest.scopes)


def test_schemathesis_default_checks_pass(app: Any, make_token: Any) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    service = app.extensions["srcore"].service_id
    token, real = _seed(app, service, make_token)
    headers = {"Authorization": f"Bearer {token}"}
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
    # The answers checked include the successful ones, not only errors.
    reads = {f"GET {op.path}" for op in operations if op.method.upper() == "GET"}
    assert reads - succeeded - {label for sid, label in NO_SUCCESS if sid == service} == set()
