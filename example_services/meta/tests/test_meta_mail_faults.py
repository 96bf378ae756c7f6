"""meta against a mail server that misbehaves as a stranger's might (srcore.testing.smtp's
FaultySMTP on 127.0.0.1): one that never answers, answers a byte at a time, refuses for
now or for good, resets the connection, hangs up after its greeting, or takes the message
and then says nothing.

Each page that mails answers with a clear message (never a 500), within the bound of its
messages; nothing waits on a mail that did not go (an address change is withdrawn, a
confirmation or reset can be asked for again and then works); and no request holds a
database connection while it talks to the mail server: the pool is looked at while the
server stalls. Every test is bounded (:func:`bounded`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from meta_constants import PASSWORD

from srcore.mail import Mailer, SMTPTransport
from srcore.testing import bounded
from srcore.testing.smtp import FaultySMTP, serve_faulty_smtp

#: The bound of one message in these tests (smtp-timeout), in seconds.
BOUND = 1.5
#: How long a test waits for a request that should be over within a few BOUNDs.
LIMIT = 30.0
#: The faults that stop a message (hang-after-accepting takes it).
STOPPING = [
    "silent",
    "drip",
    "close-after-greeting",
    "421-on-connect",
    "451-recipient",
    "550-recipient",
    "552-size",
    "reset-in-data",
    "hang-after-data",
]


def _point(app: Any, host: str, port: int) -> None:
    transport = SMTPTransport(host, port=port, tls="none", timeout=BOUND)
    app.extensions["srcore_mail"] = Mailer(transport, sender="noreply@example.org")


@pytest.fixture(params=STOPPING)
def faulty(request: pytest.FixtureRequest, app: Any) -> Iterator[FaultySMTP]:
    with serve_faulty_smtp(request.param) as server:
        _point(app, server.host, server.port)
        yield server


def _post(csrf: Any, client: Any, path: str, data: dict[str, str], page: str) -> Any:
    response = bounded(lambda: csrf.post(client, path, data, page=page))
    assert response.status_code in (200, 302), (path, response.status_code)
    return response


def _profile(client: Any) -> str:
    page = client.get("/profile")
    assert page.status_code == 200
    return str(page.get_data(as_text=True))


def _tokens(app: Any, purpose: str) -> int:
    from meta.models import EmailToken, TokenPurpose
    from sqlalchemy import func, select

    with app.extensions["srcore"].db.transaction() as session:
        query = select(func.count()).where(EmailToken.purpose == TokenPurpose[purpose])
        return int(session.scalar(query) or 0)


# -- what a person sees, and what is left behind ----------------------------------------------


def test_registering_says_the_mail_did_not_go_and_asking_again_works(
    app: Any, client: Any, csrf: Any, smtp_sink: Any, faulty: FaultySMTP
) -> None:
    form = {"username": "alice", "email": "alice@example.org", "password": PASSWORD}
    response = _post(csrf, client, "/register", form, "/register")
    assert response.status_code == 302
    profile = _profile(client)
    assert "the confirmation mail could not be sent" in profile
    assert "Try sending it again" in profile
    _post(csrf, client, "/confirm/resend", {}, "/profile")
    assert "The mail could not be sent. Try again later." in _profile(client)
    assert faulty.accepted == 0

    # The server mends: asking again sends a link, and it confirms the address.
    _point(app, smtp_sink.host, smtp_sink.port)
    _post(csrf, client, "/confirm/resend", {}, "/profile")
    link = smtp_sink.last_link("alice@example.org", "/confirm/")
    assert client.get(link).status_code == 302
    assert "Your address alice@example.org is confirmed." in _profile(client)


def test_a_change_of_address_that_was_not_mailed_is_not_pending(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any, faulty: FaultySMTP
) -> None:
    accounts.make("alice")
    login(client)
    form = {"email": "alice.new@example.org", "current_password": PASSWORD}
    _post(csrf, client, "/email", form, "/email")
    profile = _profile(client)
    assert "The mail could not be sent, so your address is unchanged." in profile
    assert 'id="pending-email"' not in profile
    assert _tokens(app, "change_email") == 0


def test_a_reset_link_that_was_not_mailed_can_be_asked_for_again(
    app: Any, client: Any, csrf: Any, accounts: Any, smtp_sink: Any, faulty: FaultySMTP
) -> None:
    accounts.make("alice")
    response = _post(csrf, client, "/forgot", {"email": "alice@example.org"}, "/forgot")
    assert response.status_code == 200  # the same answer: the mail goes after it
    assert faulty.connections == 1 and faulty.accepted == 0
    _point(app, smtp_sink.host, smtp_sink.port)
    _post(csrf, client, "/forgot", {"email": "alice@example.org"}, "/forgot")
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    assert client.get(link).status_code == 200


def test_a_message_taken_and_then_silence_counts_as_sent(
    app: Any, client: Any, csrf: Any, accounts: Any, login: Any
) -> None:
    """The server said 250 and never answers QUIT: the change of address is pending, its
    link on its way."""
    accounts.make("alice")
    login(client)
    with serve_faulty_smtp("hang-after-accepting") as server:
        _point(app, server.host, server.port)
        form = {"email": "alice.new@example.org", "current_password": PASSWORD}
        _post(csrf, client, "/email", form, "/email")
        assert server.accepted == 2  # the link, and the notice to the old address
    assert "We sent a link to alice.new@example.org" in _profile(client)
    assert _tokens(app, "change_email") == 1


# -- no connection held while the mail server takes its time -----------------------------------


@pytest.fixture
def stalling(app: Any) -> Iterator[list[tuple[int, int]]]:
    """A mail server that takes each message and then never answers; the list gets, at
    each stall, the connections checked out of meta's pool and (on PostgreSQL) the
    sessions of meta's database in a transaction or running a statement."""
    database = app.extensions["srcore"].db
    seen: list[tuple[int, int]] = []

    def probe() -> None:
        seen.append((database.engine.pool.checkedout(), _busy_backends(database.engine)))

    with serve_faulty_smtp("hang-after-data") as server:
        server.on_stall = probe
        _point(app, server.host, server.port)
        yield seen


def _busy_backends(engine: Any) -> int:
    """meta's PostgreSQL sessions not idle (0 on SQLite), seen from a connection of our own."""
    if engine.dialect.name != "postgresql":
        return 0
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    own = create_engine(engine.url, poolclass=NullPool)
    try:
        with own.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            ).fetchone()
    finally:
        own.dispose()
    return int(row[0]) if row else 0


def test_registering_holds_no_connection_while_mailing(
    client: Any, csrf: Any, stalling: list[tuple[int, int]]
) -> None:
    form = {"username": "alice", "email": "alice@example.org", "password": PASSWORD}
    _post(csrf, client, "/register", form, "/register")
    _post(csrf, client, "/confirm/resend", {}, "/profile")
    assert stalling == [(0, 0), (0, 0)]


def test_a_password_change_holds_no_connection_while_mailing(
    client: Any, csrf: Any, accounts: Any, login: Any, stalling: list[tuple[int, int]]
) -> None:
    """Its mail is sent at the commit (srcore.oncommit), once the connection is back."""
    accounts.make("alice")
    login(client)
    form = {"current_password": PASSWORD, "password": "a whole new passphrase"}
    _post(csrf, client, "/password", form, "/password")
    assert stalling == [(0, 0)]


def test_a_change_of_address_and_a_reset_hold_no_connection_while_mailing(
    client: Any, csrf: Any, accounts: Any, login: Any, stalling: list[tuple[int, int]]
) -> None:
    accounts.make("alice")
    login(client)
    form = {"email": "alice.new@example.org", "current_password": PASSWORD}
    _post(csrf, client, "/email", form, "/email")
    _post(csrf, client, "/forgot", {"email": "alice@example.org"}, "/forgot")
    assert stalling == [(0, 0), (0, 0)]
