"""Deleting an account at meta, seen from todo by someone else: meta and todo under
gunicorn on 127.0.0.1 (on SQLite, then on PostgreSQL), used through plain ``requests``.

alice has a public and a private tracker at todo, and a ticket and a comment on bob's
tracker; bob follows todo's events with a webhook. alice deletes her account at meta.
bob must then find nothing of hers at todo but what she wrote on his tracker, shown as by
a deleted user with no name; he hears her public tracker's deletion; todo's database keeps
no name or address of hers; someone registering the freed name gets none of it. todo runs
a probe hook (tests/deletion_probe) besides its own, which fails its first run: the
deletion is tried again, then never run again, though meta pushes it and every pull
brings it, and a restarted todo reads meta's whole list again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from srcore import testdb
from srcore.testing import free_port, run_service, run_worker, write_network_config
from tests.conftest import require_postgres
from tests.test_security_e2e import (
    PASSWORD,
    Network,
    bearer,
    browser,
    csrf,
    mail_sink,
    open_page_as,
    personal_token,
    register,
    wait_for,
)

__all__ = ["mail_sink"]  # a fixture used by this module

pytestmark = [pytest.mark.slow]

_SCOPES = ["todo/trackers:RW", "todo/tickets:RW"]


class Deletion:
    """The network of one database kind, and how to read and restart todo."""

    def __init__(self, net: Network, urls: dict[str, str], probe_log: Path) -> None:
        self.net, self.urls, self.probe_log = net, urls, probe_log
        self.todo_stack = contextlib.ExitStack()

    def rows(self, service: str, query: str, **params: Any) -> list[Any]:
        engine = sa.create_engine(self.urls[service], poolclass=sa.NullPool)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(query), params).all())
        finally:
            engine.dispose()

    def probe(self) -> list[str]:
        if not self.probe_log.exists():
            return []
        return [line for line in self.probe_log.read_text("utf-8").split("\n") if line]

    def start_todo(self, port: int) -> None:
        self.todo_stack.enter_context(run_service("deletion_probe", self.net.config, port=port))


@pytest.fixture(params=["sqlite", "postgresql"])
def deletion(request: pytest.FixtureRequest, tmp_path: Path, mail_sink: Any) -> Iterator[Deletion]:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    ports = {"meta": free_port(), "todo": free_port()}
    config = write_network_config(
        tmp_path / "config.ini",
        ports,
        global_keys={
            **mail_sink.config_keys(),
            "revocation-pull-interval": "1s",
            "allow-private-webhook-targets": "127.0.0.0/8",
        },
    )
    urls = {name: f"sqlite:///{tmp_path / (name + '.db')}" for name in ports}
    made: list[str] = []
    if request.param == "postgresql":
        require_postgres()
        text = config.read_text(encoding="utf-8")
        for name in ports:
            url = testdb.create_test_database(prefix=f"srcore_deletion_{name}")
            made.append(url)
            text = text.replace(urls[name], url)
            urls[name] = url
        config.write_text(text, encoding="utf-8")
    probe_log = tmp_path / "probe.log"
    try:
        for service in ports:
            upgrade_all(migration_target(service, config))
        net = Network(config, tmp_path, "", "", "", mail_sink, {})
        with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
            patch.setenv("PYTHONPATH", str(Path(__file__).parent))
            patch.setenv("DELETION_PROBE_LOG", str(probe_log))
            net.meta = stack.enter_context(run_service("meta", config, port=ports["meta"]))
            stack.enter_context(run_worker("meta", config))
            stack.enter_context(run_worker("todo", config))
            found = Deletion(net, urls, probe_log)
            found.start_todo(ports["todo"])
            stack.callback(lambda: found.todo_stack.close())
            net.todo = f"http://127.0.0.1:{ports['todo']}"
            try:
                yield found
            finally:
                for receiver in net.receivers:
                    receiver.close()
    finally:
        for url in made:
            testdb.drop_test_database(url)


def _form(b: requests.Session, url: str, **fields: str) -> requests.Response:
    page = b.get(url, timeout=10)
    answer = b.post(url, data={"csrf_token": csrf(page), **fields}, timeout=10)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:1000])
    return answer


def _tracker(net: Network, b: requests.Session, who: str, name: str, visibility: str) -> str:
    open_page_as(net, b, who, net.todo, "/create")
    made = _form(b, f"{net.todo}/create", name=name, visibility=visibility)
    return str(made.url)


def test_a_deleted_account_leaves_nothing_readable_at_todo(deletion: Deletion) -> None:
    net = deletion.net
    alice, bob = register(net, "alice"), register(net, "bob")
    old_id = deletion.rows("meta", "SELECT id FROM \"user\" WHERE username = 'alice'")[0][0]
    pub = _tracker(net, alice, "alice", "pub", "public")
    priv = _tracker(net, alice, "alice", "priv", "private")
    for tracker in (pub, priv):
        _form(alice, f"{tracker}/new", title="alice's own ticket", description="mine")
    bobs = _tracker(net, bob, "bob", "bobs", "public")
    on_bobs = _form(alice, f"{bobs}/new", title="a ticket by alice", description="alice wrote")
    ticket = str(on_bobs.url)
    page = alice.get(ticket, timeout=10)
    alice.post(
        f"{ticket}/comment",
        data={"csrf_token": csrf(page), "text": "a comment by alice"},
        timeout=10,
    )
    assert "alice" in bob.get(ticket, timeout=10).text
    bob_token = personal_token(net, bob, _SCOPES)
    alice_token = personal_token(net, alice, _SCOPES)
    receiver = net.receiver()
    made = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(bob_token),
        json={"url": receiver.url, "events": ["tracker:deleted"]},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    made = requests.post(
        f"{net.todo}/api/webhooks",
        headers=bearer(alice_token),
        json={"url": receiver.url, "events": ["tracker:deleted"]},
        timeout=10,
    )
    assert made.status_code == 201, made.text

    page = alice.get(f"{net.meta}/delete", timeout=10)
    gone = alice.post(
        f"{net.meta}/delete",
        data={"csrf_token": csrf(page), "current_password": PASSWORD},
        timeout=10,
    )
    assert gone.status_code == 200 and gone.url.startswith(f"{net.meta}/login"), gone.url

    # todo drops her data once, after its probe hook failed the first run.
    wait_for(lambda: f"done {old_id}" in deletion.probe())
    assert deletion.probe() == [f"attempt {old_id}", f"attempt {old_id}", f"done {old_id}"]
    # bob hears of her public tracker's deletion, and nobody of her private one's.
    wait_for(lambda: any(m["type"] == "tracker:deleted" for m in receiver.got))
    time.sleep(1)  # a second delivery (her subscription, the private tracker) would be here
    deleted = [m["data"]["name"] for m in receiver.got if m["type"] == "tracker:deleted"]
    assert deleted == ["pub"], receiver.got

    # Her token is refused; nothing of hers is found by bob, by a stranger or by the API.
    answer = requests.get(f"{net.todo}/api/trackers", headers=bearer(alice_token), timeout=10)
    assert answer.status_code == 401
    stranger = browser()
    for who in (bob, stranger):
        for url in (pub, priv, f"{pub}/1", f"{priv}/1", f"{net.todo}/~~{old_id}/pub"):
            assert who.get(url, timeout=10).status_code == 404, url
        front = who.get(f"{net.todo}/", timeout=10)
        assert front.status_code == 200 and "pub" not in front.text.replace("public", "")
        for url in (ticket, bobs, f"{bobs}?search=submitter:alice"):
            shown = who.get(url, timeout=10)
            assert shown.status_code == 200, url
            assert "alice@" not in shown.text and "~alice" not in shown.text, url
        shown = who.get(ticket, timeout=10).text
        assert "a ticket by alice" in shown and "a comment by alice" in shown
        assert "deleted user" in shown and ">alice<" not in shown
    api = f"{net.todo}/api/trackers/bobs/tickets/1"
    shown_json = requests.get(api, headers=bearer(bob_token), timeout=10).json()
    assert shown_json["submitter"] == {"id": old_id, "username": f"~{old_id}"}
    comments = requests.get(f"{api}/comments", headers=bearer(bob_token), timeout=10).json()
    assert [c["author"] for c in comments["results"]] == [{"id": old_id, "username": f"~{old_id}"}]
    listed = requests.get(f"{net.todo}/api/webhooks", headers=bearer(bob_token), timeout=10)
    assert receiver.url in listed.text
    # todo's database keeps no name, address or profile of hers, nor her subscriptions.
    row = deletion.rows(
        "todo",
        'SELECT username, email, url, location, bio, user_type FROM "user" WHERE id = :id',
        id=old_id,
    )
    assert row == [(f"~{old_id}", "", None, None, None, "deleted")], row
    assert deletion.rows("todo", "SELECT id FROM tracker WHERE owner_id = :id", id=old_id) == []
    subscriptions = "SELECT id FROM srcore_webhook_subscription WHERE owner_id = :id"
    assert deletion.rows("todo", subscriptions, id=old_id) == []

    # Someone else registers the freed name: none of the old account is theirs.
    carol = register(net, "alice")
    open_page_as(net, carol, "alice", net.todo, "/create")
    for url in (pub, priv, f"{pub}/1"):
        assert carol.get(url, timeout=10).status_code == 404, url
    carol_token = personal_token(net, carol, _SCOPES)
    for path in ("/api/trackers", "/api/webhooks"):
        answer = requests.get(net.todo + path, headers=bearer(carol_token), timeout=10)
        assert answer.status_code == 200 and answer.json()["results"] == [], answer.text
    assert "a ticket by alice" not in carol.get(f"{net.todo}/", timeout=10).text

    # A restarted todo reads meta's whole list again: the deletion is not run again.
    port = int(net.todo.rsplit(":", 1)[1])
    deletion.todo_stack.close()
    deletion.todo_stack = contextlib.ExitStack()
    deletion.start_todo(port)
    wait_for(
        lambda: (
            requests.get(
                f"{net.todo}/api/trackers", headers=bearer(carol_token), timeout=10
            ).status_code
            == 200
        )
    )
    time.sleep(2.5)  # two more pull rounds
    assert deletion.probe() == [f"attempt {old_id}", f"attempt {old_id}", f"done {old_id}"]
    answer = requests.get(f"{net.todo}/api/trackers", headers=bearer(alice_token), timeout=10)
    assert answer.status_code == 401
