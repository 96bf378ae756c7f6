"""A throw-away meta + todo network on 127.0.0.1 for the identity benchmarks.

One config file in a temporary directory, meta's and todo's databases migrated, a user at
meta with personal access tokens minted through meta's own code (``meta.oauth.pats``), the
same user with a tracker and a ticket at todo, and gunicorn processes for meta and todo.
Everything listens on 127.0.0.1 only; gunicorn's stderr goes to a log file next to the
config (a pipe nobody reads would fill up and stall the server).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srcore.supervisor import Program, Supervisor, http_ok
from srcore.testing import free_port

TRACKER = "bench"
TICKET_PATH = f"/api/trackers/{TRACKER}/tickets/1"
SCOPE = "todo/tickets:RO"


@dataclass
class Pat:
    id: int
    token: str


@dataclass
class Network:
    """What :func:`prepare` made: config, ports, the user and their tokens."""

    tmp: Path
    config: Path
    meta_port: int
    todo_port: int
    todo_secret: str
    user_id: int = 0
    #: A PAT with ``meta/tokens:RW``, to revoke the others through meta's API.
    admin: Pat | None = None
    pats: list[Pat] = field(default_factory=list)

    @property
    def meta_url(self) -> str:
        return f"http://127.0.0.1:{self.meta_port}"

    @property
    def todo_url(self) -> str:
        return f"http://127.0.0.1:{self.todo_port}"


def write_network_config(
    tmp: Path,
    *,
    todo_database_url: str | None = None,
    redis_url: str | None = None,
    pull_interval: float = 30,
    drop_pushes: bool = False,
) -> Network:
    """Write the config of a meta + todo network; *drop_pushes* points meta's events nowhere."""
    meta_port, todo_port = free_port(), free_port()
    todo_secret = secrets.token_urlsafe(40)
    default_todo_db = f"sqlite:///{tmp / 'todo.db'}"
    lines = [
        "[global]",
        "site-name = srcore bench network",
        "environment = development",
        "log-level = warning",
        f"revocation-pull-interval = {pull_interval:g}s",
    ]
    if redis_url:
        lines.append(f"redis-url = {redis_url}")
    lines += [
        "",
        "[meta]",
        f"origin = http://127.0.0.1:{meta_port}",
        f"database-url = sqlite:///{tmp / 'meta.db'}",
        f"secret-key = {secrets.token_urlsafe(48)}",
        "",
        "[todo]",
        f"origin = http://127.0.0.1:{todo_port}",
        f"database-url = {todo_database_url or default_todo_db}",
        f"secret-key = {secrets.token_urlsafe(48)}",
        "oauth-client-id = todo",
        f"oauth-client-secret = {todo_secret}",
    ]
    if drop_pushes:
        # meta's worker delivers to todo's internal-origin, where nobody listens: only the
        # pull works.
        lines.append(f"internal-origin = http://127.0.0.1:{free_port()}")
    config = tmp / "config.ini"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Network(tmp, config, meta_port, todo_port, todo_secret)


def migrate(net: Network) -> None:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    for service in ("meta", "todo"):
        upgrade_all(migration_target(service, net.config))


def seed_meta(net: Network, *, tokens: int) -> None:
    """An active user at meta, an admin PAT and *tokens* PATs for ``todo/tickets:RO``."""
    import meta
    from meta.models import User
    from meta.oauth.pats import create_token

    from srcore.db import UserType
    from srcore.db import session as db_session

    app = meta.create_app(config=net.config)
    with app.app_context():
        user = User(
            id=1,
            username="alice",
            email="alice@example.org",
            user_type=UserType.active,
            password_hash="!",  # never logs in: the tokens are minted here
        )
        db_session.add(user)
        db_session.commit()  # the key ring writes meta's signing key in its own session
        row, token = create_token(user, name="admin", scope="meta/tokens:RW", days=1)
        admin = Pat(row.id, token)
        pats = []
        for i in range(tokens):
            row, token = create_token(user, name=f"bench-{i}", scope=SCOPE, days=1)
            pats.append(Pat(row.id, token))
        db_session.commit()
        net.user_id, net.admin, net.pats = user.id, admin, pats
    app.extensions["srcore"].db.dispose()


def seed_todo(app: Any, user_id: int) -> None:
    """The same user at todo (as a login would copy it), a tracker and one ticket."""
    from todo.models import Ticket, TicketStatus, Tracker, User, Visibility

    from srcore.db import UserType

    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            User(id=user_id, username="alice", email="alice@example.org", user_type=UserType.active)
        )
        session.flush()
        tracker = Tracker(
            owner_id=user_id, name=TRACKER, description="", visibility=Visibility.public
        )
        session.add(tracker)
        session.flush()
        session.add(
            Ticket(
                tracker_id=tracker.id,
                number=1,
                title="A ticket",
                description="Some *markdown*.",
                status=TicketStatus.open,
                submitter_id=user_id,
            )
        )


def seed_todo_from_config(net: Network) -> None:
    import todo

    app = todo.create_app(config=net.config)
    seed_todo(app, net.user_id)
    app.extensions["srcore"].db.dispose()


def prepare(tmp: Path, *, tokens: int, **config: Any) -> Network:
    """Config, migrations, meta's user and tokens (todo's rows are the caller's business)."""
    net = write_network_config(tmp, **config)
    migrate(net)
    seed_meta(net, tokens=tokens)
    return net


@contextlib.contextmanager
def serve(
    package: str, net: Network, *, port: int, workers: int = 1, timeout: float = 30
) -> Iterator[str]:
    """Run *package* under gunicorn on 127.0.0.1:*port* until the block ends; yield its URL.

    Run by :mod:`srcore.supervisor` (its own process group, stopped with its workers);
    its log goes to a file next to the config.
    """
    argv = (
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--graceful-timeout",
        "2",
        "--control-socket",  # its own, not the shared ~/.gunicorn/gunicorn.ctl
        str(net.tmp / f"gunicorn-{port}.ctl"),
        f"{package}:create_app()",
    )
    env = dict(os.environ, SRCORE_CONFIG=str(net.config))
    url = f"http://127.0.0.1:{port}"
    with (
        open(net.tmp / f"{package}-{port}.log", "a", encoding="utf-8") as log,
        Supervisor(log, name="bench", stop_timeout=10) as supervisor,
    ):
        child = supervisor.start(Program(package, argv, env))
        supervisor.wait_until(functools.partial(http_ok, url + "/healthz"), child, timeout=timeout)
        yield url
