"""More end to end: meta and todo under gunicorn on 127.0.0.1, driven with requests.

An admin's suspension at meta reaches todo within seconds (web session and API token
refused) and its lifting lets the user back in; an API token of a user todo has never
seen works (todo copies the user from meta's ``/api/users/<id>``); a profile change at
meta reaches todo's copy of the user by meta's ``profile:updated`` webhook.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.testing import (
    SMTPSink,
    free_port,
    run_service,
    run_worker,
    serve_smtp_sink,
    write_network_config,
)

pytestmark = [
    pytest.mark.slow,
]

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_NEW_TOKEN = re.compile(r'id="new-token">([^<]+)<')
PASSWORD = "correct horse battery staple"
#: How long a change at meta may take to reach todo: meta's event, or the 1 s pull behind it.
REACH = 4.0


@dataclass
class Network:
    config: Path
    meta: str
    todo: str
    todo_db: Path
    sink: SMTPSink


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp("network-more")
    # The fixture serves its own sink: test_network_browser.py takes this fixture alone.
    with serve_smtp_sink() as sink:
        ports = {"meta": free_port(), "todo": free_port()}
        config = write_network_config(
            tmp / "config.ini",
            ports,
            global_keys={
                **sink.config_keys(),
                "revocation-pull-interval": "1s",
            },
        )
        for service in ports:
            upgrade_all(migration_target(service, config))
        with (
            run_service("meta", config, port=ports["meta"], timeout=60) as meta,
            run_worker("meta", config, timeout=60),
            run_service("todo", config, port=ports["todo"], timeout=60) as todo,
        ):
            yield Network(config, meta, todo, tmp / "todo.db", sink)


# -- what a person does, in plain HTTP ----------------------------------------------------


def csrf(page: requests.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


def register(net: Network, username: str) -> requests.Session:
    """Register and confirm *username* at meta; return their browser, logged in at meta."""
    browser = requests.Session()
    page = browser.get(f"{net.meta}/register", timeout=10)
    form = {
        "csrf_token": csrf(page),
        "username": username,
        "email": f"{username}@example.org",
        "password": PASSWORD,
    }
    done = browser.post(f"{net.meta}/register", data=form, timeout=10)
    assert done.status_code == 200, done.text[:2000]
    link = net.sink.wait_for_link(f"{username}@example.org", "/confirm/")
    assert browser.get(link, timeout=10).status_code == 200
    return browser


def open_todo(net: Network, browser: requests.Session, username: str) -> requests.Response:
    """Open todo's "new tracker" page, logging in at meta's form if meta asks."""
    page = browser.get(f"{net.todo}/create", timeout=10)
    if page.url.startswith(f"{net.meta}/login"):
        form = {"csrf_token": csrf(page), "login": username, "password": PASSWORD}
        page = browser.post(page.url, data=form, timeout=10)
    return page


def personal_token(net: Network, browser: requests.Session, scopes: list[str]) -> str:
    """A personal access token made on meta's security page."""
    page = browser.get(f"{net.meta}/security", timeout=10)
    form = {"csrf_token": csrf(page), "name": "e2e", "scopes": scopes, "expires": "365"}
    made = browser.post(f"{net.meta}/security/tokens", data=form, timeout=10)
    found = _NEW_TOKEN.search(made.text)
    assert found, made.text[:2000]
    return found.group(1).strip()


def token_user_id(token: str) -> int:
    """The ``sub`` of an access token (read, not verified: todo does the verifying)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["sub"])


def make_admin(net: Network, username: str) -> None:
    """What an operator runs (and `make demo` prints)."""
    done = subprocess.run(
        [sys.executable, "-m", "meta.admin", "make-admin", username, "--config", str(net.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "is an admin now" in done.stdout


def admin_post(
    net: Network, admin: requests.Session, user_id: int, action: str, **form: str
) -> None:
    page = admin.get(f"{net.meta}/admin/users/{user_id}", timeout=10)
    assert page.status_code == 200, page.text[:2000]
    done = admin.post(
        f"{net.meta}/admin/users/{user_id}/{action}",
        data={"csrf_token": csrf(page), **form},
        timeout=10,
    )
    assert done.status_code == 200, done.text[:2000]
    assert done.url == f"{net.meta}/admin/users/{user_id}", done.url


def api(net: Network, token: str, path: str = "/api/trackers") -> requests.Response:
    return requests.get(
        f"{net.todo}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def wait_for(check: Callable[[], bool], timeout: float = REACH) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def todo_user(net: Network, user_id: int) -> dict[str, Any] | None:
    """todo's own copy of a user: its row in todo's database."""
    with sqlite3.connect(net.todo_db, timeout=5) as db:
        db.row_factory = sqlite3.Row
        row = db.execute('SELECT * FROM "user" WHERE id = ?', (user_id,)).fetchone()
    return dict(row) if row is not None else None


# -- the tests ----------------------------------------------------------------------------


def test_suspension_at_meta_is_refused_at_todo_and_lifted(network: Network) -> None:
    net = network
    sam = register(net, "sam")
    assert open_todo(net, sam, "sam").url == f"{net.todo}/create"
    token = personal_token(net, sam, ["todo/trackers:RO"])
    assert api(net, token).status_code == 200
    sam_id = token_user_id(token)

    admin = register(net, "boss")
    make_admin(net, "boss")
    admin_post(net, admin, sam_id, "suspend", notice="Spamming the trackers.")

    def web_refused() -> bool:
        answer = sam.get(f"{net.todo}/create", allow_redirects=False, timeout=10)
        return answer.status_code != 200

    # Both the web session and the token stop working at todo within seconds (by meta's event;
    # the pull every second is the fallback).
    assert wait_for(lambda: api(net, token).status_code == 401) < REACH
    assert wait_for(web_refused) < REACH
    refused = api(net, token)
    assert refused.status_code == 401, refused.text
    assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    assert refused.json()["errors"][0]["reason"]
    page = sam.get(f"{net.todo}/create", allow_redirects=False, timeout=10)
    assert page.status_code == 302, page.status_code
    assert page.headers["Location"].startswith(f"{net.meta}/oauth/authorize"), page.headers
    # Nor can sam log in to todo again while suspended: meta shows the notice.
    again = open_todo(net, sam, "sam")
    assert again.status_code == 403, (again.status_code, again.url)
    assert again.url.startswith(f"{net.meta}/login"), again.url
    assert "Spamming the trackers." in again.text
    assert todo_user(net, sam_id) is not None

    admin_post(net, admin, sam_id, "unsuspend")
    # Everything issued before the suspension stays dead; what is new works again.
    sam = requests.Session()
    back = open_todo(net, sam, "sam")
    assert back.url == f"{net.todo}/create", back.url
    assert back.status_code == 200
    assert "sam" in back.text
    new_token = personal_token(net, sam, ["todo/trackers:RO"])
    wait_for(lambda: api(net, new_token).status_code == 200)
    assert api(net, token).status_code == 401, "a token from before the suspension came back"


def test_token_of_a_user_todo_never_saw_works(network: Network) -> None:
    net = network
    nina = register(net, "nina")
    token = personal_token(net, nina, ["todo/trackers:RW"])
    nina_id = token_user_id(token)
    assert todo_user(net, nina_id) is None  # nina never visited todo

    listing = api(net, token)
    assert listing.status_code == 200, listing.text
    assert listing.json()["results"] == []
    row = todo_user(net, nina_id)
    assert row is not None, "todo did not copy the user from meta"
    assert (row["username"], row["email"]) == ("nina", "nina@example.org")

    made = requests.post(
        f"{net.todo}/api/trackers",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "errands", "visibility": "public"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    assert [t["name"] for t in api(net, token).json()["results"]] == ["errands"]
    # The tracker is nina's on todo's web pages too.
    page = requests.get(f"{net.todo}/~nina/errands", timeout=10)
    assert page.status_code == 200
    assert "errands" in page.text


def test_profile_change_at_meta_reaches_todo(network: Network) -> None:
    net = network
    pia = register(net, "pia")
    assert open_todo(net, pia, "pia").url == f"{net.todo}/create"
    user_id = token_user_id(personal_token(net, pia, ["todo/trackers:RO"]))
    assert todo_user(net, user_id)["location"] is None  # type: ignore[index]

    page = pia.get(f"{net.meta}/profile", timeout=10)
    form = {
        "csrf_token": csrf(page),
        "url": "https://pia.example.org/",
        "location": "Lisbon",
        "bio": "Grows *tomatoes*.",
    }
    saved = pia.post(f"{net.meta}/profile", data=form, timeout=10)
    assert saved.status_code == 200, saved.text[:2000]

    wait_for(lambda: (todo_user(net, user_id) or {}).get("location") == "Lisbon")
    row = todo_user(net, user_id)
    assert row is not None
    assert row["url"] == "https://pia.example.org/"
    assert row["bio"] == "Grows *tomatoes*."
    assert row["username"] == "pia"
