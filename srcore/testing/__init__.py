"""srcore's pytest plugin and the helpers of every service's tests.

The plugin is opt-in: a suite asks for it in its ``conftest.py``, and names the package
under test in a ``srcore_service`` fixture::

    pytest_plugins = ["srcore.testing"]


    @pytest.fixture(scope="session")
    def srcore_service() -> str:
        return "todo"

It then gets ``app``, ``client``, ``db``, ``user``, ``user_client``, ``make_token``,
``app_url`` (the app on a socket) and ``smtp_sink`` (:mod:`srcore.testing.fixtures`).
Every test that uses the database runs twice: on SQLite and on PostgreSQL. PostgreSQL
gets a throw-away database per test session (dropped afterwards); when it is unreachable,
or psycopg (srcore's ``postgres`` extra) is not installed, those runs are skipped, except
under ``CI=true``, where they fail.

The service's app factory must accept ``config`` and pass other keyword arguments on to
:func:`srcore.create_app` (the generated services do).

The helpers live in modules of their own and are all importable from here: config files
(:mod:`.configs`), users, sessions and tokens (:mod:`.users`), migrated test databases
(:mod:`.databases`), services and workers in processes of their own (:mod:`.processes`),
in-process webhook delivery (:mod:`.delivery`), HTTP receivers (:mod:`.receivers`), an
SMTP sink (:mod:`.smtp`), the browser (:mod:`.browser`) and races replayed without threads
(:mod:`.races`). Only the fixtures and
:func:`require_or_skip` need pytest; the rest also serves scripts and benchmarks.
"""

from __future__ import annotations

from srcore.testing.bounds import bounded
from srcore.testing.browser import CHROMIUM_ARGS, chromium_path, launch_chromium
from srcore.testing.configs import new_secret, write_config, write_network_config
from srcore.testing.databases import ServiceDatabase
from srcore.testing.databases import _clean as _clean
from srcore.testing.delivery import deliver_pending
from srcore.testing.processes import (
    RunningNetwork,
    free_port,
    gunicorn_argv,
    run_network,
    run_service,
    run_worker,
)
from srcore.testing.races import before_first_write
from srcore.testing.rawhttp import RawReply, exchange
from srcore.testing.receivers import FormReceiver, form_receiver, serving
from srcore.testing.skipping import require_or_skip
from srcore.testing.smtp import ReceivedMail, SMTPSink, serve_smtp_sink
from srcore.testing.users import (
    TEST_ISSUER,
    create_user,
    log_in_client,
    mint_token,
    session_cookie,
)
from srcore.testing.users import _signing_key as _signing_key

__all__ = [
    "CHROMIUM_ARGS",
    "TEST_ISSUER",
    "FormReceiver",
    "RawReply",
    "ReceivedMail",
    "RunningNetwork",
    "SMTPSink",
    "ServiceDatabase",
    "before_first_write",
    "bounded",
    "chromium_path",
    "create_user",
    "deliver_pending",
    "exchange",
    "form_receiver",
    "free_port",
    "gunicorn_argv",
    "launch_chromium",
    "log_in_client",
    "mint_token",
    "new_secret",
    "require_or_skip",
    "run_network",
    "run_service",
    "run_worker",
    "serve_smtp_sink",
    "serving",
    "session_cookie",
    "write_config",
    "write_network_config",
]

#: What ``pytest_plugins = ["srcore.testing"]`` loads: the hooks and the fixtures.
pytest_plugins = ["srcore.testing.fixtures"]
