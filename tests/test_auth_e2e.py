"""End to end: meta, the sample service and todo under gunicorn on 127.0.0.1.

A person registers and logs in at meta through plain HTTP (requests follows the
redirects a browser would), single sign-on carries them into a second service, logging
out at meta ends the services' sessions, and a revoked token stops working at a service
through meta's events (webhooks that ``srcore worker meta`` delivers to the service's
``/_srcore/events``), or through the pull when they cannot reach the service.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.testing import SMTPSink, free_port, run_service, run_worker, serve_smtp_sink

pytestmark = [
    pytest.mark.slow,
]

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PASSWORD = "correct horse battery staple"


@dataclass
class Network:
    stop_meta: Callable[[], None]
    meta: str
    sample: str
    todo: str
    sink: SMTPSink
    secrets: dict[str, str]
    pull_interval: float
    #: Where the network's files are (meta.db among them).
    dir: Path


def _migrate(config: Path) -> None:
    import sample_service

    from srcore.app import migration_target
    from srcore.config import load_config
    from srcore.manifest import load_manifest
    from srcore.migrate import core_metadata, upgrade_all

    for service in ("meta", "todo"):
        upgrade_all(migration_target(service, config))
    app = sample_service.create_app(
        config=load_config(config, specs=dict(load_manifest("sample_service").config))
    )
    st = app.extensions["srcore"]
    # As `srcore migrate` would: srcore's own tables (which meta's events update) too.
    core_metadata().create_all(st.db.engine)
    st.metadata.create_all(st.db.engine)
    st.db.dispose()


@pytest.fixture(scope="module")
def mail_sink() -> Iterator[SMTPSink]:
    """meta's mail, kept as long as the network runs."""
    with serve_smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, mail_sink: SMTPSink) -> Iterator[Network]:
    tmp = tmp_path_factory.mktemp("network")
    ports = {name: free_port() for name in ("meta", "sample", "todo")}
    keys = {name: secrets.token_urlsafe(40) for name in ("sample", "todo")}
    pull_interval = 1.0
    config = tmp / "config.ini"
    lines = [
        "[global]",
        "environment = development",
        f"smtp-host = 127.0.0.1\nsmtp-port = {mail_sink.port}\nsmtp-tls = none",
        "smtp-from = meta@example.org",
        f"revocation-pull-interval = {int(pull_interval)}s",
        "",
    ]
    for name, port in ports.items():
        lines += [
            f"[{name}]",
            f"origin = http://127.0.0.1:{port}",
            f"database-url = sqlite:///{tmp / (name + '.db')}",
            f"secret-key = {secrets.token_urlsafe(40)}",
        ]
        if name != "meta":
            lines += [f"oauth-client-id = {name}", f"oauth-client-secret = {keys[name]}"]
        if name == "todo":
            # meta's events to todo go nowhere: todo learns of revocations by pulling.
            lines.append(f"internal-origin = http://127.0.0.1:{free_port()}")
        lines.append("")
    config.write_text("\n".join(lines), encoding="utf-8")
    _migrate(config)
    tests_dir = str(Path(__file__).parent)
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.ExitStack() as stack,
        contextlib.ExitStack() as meta_stack,
    ):
        patch.setenv("PYTHONPATH", tests_dir)
        meta = meta_stack.enter_context(run_service("meta", config, port=ports["meta"]))
        # meta's webhook worker delivers its revocation events to the services.
        meta_stack.enter_context(run_worker("meta", config))
        urls = {
            name: stack.enter_context(run_service(package, config, port=ports[name]))
            for name, package in (("sample", "sample_service"), ("todo", "todo"))
        }
        yield Network(
            meta_stack.close,
            meta,
            urls["sample"],
            urls["todo"],
            mail_sink,
            keys,
            pull_interval,
            tmp,
        )


def csrf(page: requests.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


def register(net: Network, browser: requests.Session, username: str) -> None:
    page = browser.get(f"{net.meta}/register", timeout=10)
    form = {
        "csrf_token": csrf(page),
        "username": username,
        "email": f"{username}@example.org",
        "password": PASSWORD,
    }
    done = browser.post(f"{net.meta}/register", data=form, timeout=10)
    assert done.status_code == 200, done.text[:2000]
    link = net.sink.wait_for_link(f"{username}@example.org", "/confirm/", timeout=5)
    assert browser.get(link, timeout=10).status_code == 200


def log_in_at_meta(net: Network, browser: requests.Session, username: str, page: Any) -> Any:
    """Submit meta's login form found on *page* (where the service sent the browser)."""
    assert page.url.startswith(f"{net.meta}/login"), page.url
    action = page.url
    form = {"csrf_token": csrf(page), "login": username, "password": PASSWORD}
    return browser.post(action, data=form, timeout=10)


#: How long a revocation may take to reach a service: a bound against hanging, not a
#: measure of speed (one failed attempt and its retry five seconds later fit in it).
REACH = 15.0


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def pushed_to(net: Network, base: str) -> int:
    """How many of meta's revocation events its worker has delivered to the service at
    *base*: proof that an event, not the service's own pull, carried a revocation (both
    take about a second here, so their timing cannot tell them apart)."""
    with sqlite3.connect(net.dir / "meta.db") as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM srcore_webhook_delivery d"
            " JOIN srcore_webhook_subscription s ON s.id = d.subscription_id"
            " JOIN srcore_webhook_outbox o ON o.id = d.outbox_id"
            " WHERE s.url LIKE ? AND d.status = 'delivered' AND o.event = 'revocation:issued'",
            (base + "/%",),
        ).fetchone()
    return int(count)


def client_token(net: Network, client: str, scope: str) -> str:
    answer = requests.post(
        f"{net.meta}/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client, net.secrets[client]),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def revoke(net: Network, client: str, token: str) -> None:
    answer = requests.post(
        f"{net.meta}/oauth/revoke",
        data={"token": token},
        auth=(client, net.secrets[client]),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def test_login_sso_and_logout_across_services(network: Network) -> None:
    net = network
    browser = requests.Session()
    register(net, browser, "erin")
    browser.post(f"{net.meta}/logout", data={"csrf_token": csrf(browser.get(f"{net.meta}/"))})
    # A fresh visit to a page that needs a login goes through meta's login form.
    page = browser.get(f"{net.sample}/private", timeout=10)
    done = log_in_at_meta(net, browser, "erin", page)
    assert done.url == f"{net.sample}/private", done.url
    assert done.text == "hello erin"
    # Single sign-on: todo logs erin in without a form.
    created = browser.get(f"{net.todo}/create", timeout=10)
    assert created.url == f"{net.todo}/create", created.url
    assert created.status_code == 200
    assert "erin" in created.text
    # Logging out at meta ends both services' sessions (sample by meta's event, todo by pull).
    front = browser.get(f"{net.meta}/", timeout=10)
    pushed = pushed_to(net, net.sample)
    browser.post(f"{net.meta}/logout", data={"csrf_token": csrf(front)}, timeout=10)

    def logged_out(url: str) -> Callable[[], bool]:
        def check() -> bool:
            answer = browser.get(url, allow_redirects=False, timeout=10)
            return answer.status_code == 302 and "/oauth/authorize" in answer.headers["Location"]

        return check

    wait_for(logged_out(f"{net.sample}/private"), REACH)
    wait_for(lambda: pushed_to(net, net.sample) > pushed, REACH)
    wait_for(logged_out(f"{net.todo}/create"), net.pull_interval + REACH)


def test_well_known_document_is_served(network: Network) -> None:
    answer = requests.get(f"{network.sample}/.well-known/srcore-service", timeout=10)
    assert answer.json()["id"] == "sample"


def test_token_revocation_reaches_the_service_by_event(network: Network) -> None:
    net = network
    token = client_token(net, "sample", "sample/things:RO")
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{net.sample}/api/things", headers=auth, timeout=10).status_code == 200
    pushed = pushed_to(net, net.sample)
    revoke(net, "sample", token)
    wait_for(
        lambda: (
            requests.get(f"{net.sample}/api/things", headers=auth, timeout=10).status_code == 401
        ),
        REACH,
    )
    wait_for(lambda: pushed_to(net, net.sample) > pushed, REACH)


def test_token_revocation_reaches_the_service_by_pull_without_events(network: Network) -> None:
    net = network
    token = client_token(net, "todo", "todo/trackers:RO")
    auth = {"Authorization": f"Bearer {token}"}
    # Valid, but a client-only token has no trackers: 403 until the revocation arrives.
    listing = requests.get(f"{net.todo}/api/trackers", headers=auth, timeout=10)
    assert listing.status_code == 403, listing.text
    revoke(net, "todo", token)
    wait_for(
        lambda: (
            requests.get(f"{net.todo}/api/trackers", headers=auth, timeout=10).status_code == 401
        ),
        net.pull_interval + 3,
    )
    answer = requests.get(f"{net.todo}/api/trackers", headers=auth, timeout=10)
    assert answer.status_code == 401
    assert "revoked" in answer.json()["errors"][0]["reason"]


def test_zz_meta_down_keeps_sessions_and_tokens_but_not_new_logins(network: Network) -> None:
    """Runs last: it stops meta."""
    net = network
    browser = requests.Session()
    register(net, browser, "frank")
    assert browser.get(f"{net.sample}/private", timeout=10).text == "hello frank"
    token = client_token(net, "sample", "sample/things:RO")
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{net.sample}/api/things", headers=auth, timeout=10).status_code == 200
    net.stop_meta()
    assert browser.get(f"{net.sample}/private", timeout=10).text == "hello frank"
    assert requests.get(f"{net.sample}/api/things", headers=auth, timeout=10).status_code == 200
    stranger = requests.get(f"{net.sample}/private", timeout=10)
    assert stranger.status_code == 503
    assert "Account service unavailable" in stranger.text
    assert "Traceback" not in stranger.text
