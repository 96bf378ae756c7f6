"""An account's life across the network, from outside: meta, todo and paste under gunicorn
on 127.0.0.1, used by two people through plain ``requests``.

alice makes public and private things at todo and paste, webhook subscriptions at all
three services and a personal access token, then deletes her account at meta. Her token
and sessions must stop everywhere, her subscriptions receive nothing more and none of them
outlives the account at meta, her trackers go at todo and her pastes at paste. Then
someone else registers the freed name: the URLs ``/~alice/...`` are hers now, but none
of the old account's private things, subscriptions or tokens are.

The network and the helpers are test_security_e2e.py's.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.test_security_e2e import (
    PASSWORD,
    Network,
    bearer,
    browser,
    csrf,
    mail_sink,
    network,
    open_page_as,
    personal_token,
    register,
    wait_for,
)

__all__ = ["mail_sink", "network"]  # fixtures used by this module

pytestmark = [pytest.mark.slow]

_SCOPES = ["todo/trackers:RW", "todo/tickets:RW", "paste/pastes:RW", "meta/profile:RW"]
_EVENTS = {
    "todo": ["tracker:created", "ticket:created", "comment:created"],
    "paste": ["paste:created"],
    "meta": ["profile:updated"],
}


def _post_form(b: requests.Session, page: requests.Response, url: str, **fields: str) -> Any:
    answer = b.post(url, data={"csrf_token": csrf(page), **fields}, timeout=10)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:1000])
    return answer


def _tracker(net: Network, b: requests.Session, who: str, name: str, visibility: str) -> str:
    page = open_page_as(net, b, who, net.todo, "/create")
    made = _post_form(b, page, f"{net.todo}/create", name=name, visibility=visibility)
    ticket = _post_form(
        b, b.get(f"{made.url}/new", timeout=10), f"{made.url}/new", title=f"{visibility} ticket"
    )
    return str(ticket.url)


def _paste(net: Network, b: requests.Session, who: str, text: str, visibility: str) -> str:
    page = open_page_as(net, b, who, net.paste, "/new")
    return str(_post_form(b, page, f"{net.paste}/new", text=text, visibility=visibility).url)


def _bases(net: Network) -> dict[str, str]:
    return {"todo": net.todo, "paste": net.paste, "meta": net.meta}


def test_a_deleted_account_ends_everywhere_and_its_name_comes_back_empty(
    network: Network,
) -> None:
    net = network
    alice, bob = register(net, "alice"), register(net, "bob")
    old_id = net.rows("meta", "SELECT id FROM user WHERE username = 'alice'")[0][0]
    public_ticket = _tracker(net, alice, "alice", "pub", "public")
    private_ticket = _tracker(net, alice, "alice", "priv", "private")
    public_paste = _paste(net, alice, "alice", "alice's public paste", "public")
    token = personal_token(net, alice, _SCOPES)
    receiver = net.receiver()
    for service, base in _bases(net).items():
        made = requests.post(
            f"{base}/api/webhooks",
            headers=bearer(token),
            json={"url": receiver.url, "events": _EVENTS[service]},
            timeout=10,
        )
        assert made.status_code == 201, made.text
    # bob comments on alice's public ticket: her subscription hears of it.
    open_page_as(net, bob, "bob", net.todo, "/create")
    shown = bob.get(public_ticket, timeout=10)
    _post_form(bob, shown, f"{public_ticket}/comment", text="a comment from bob")
    wait_for(lambda: any(m["type"] == "comment:created" for m in receiver.got))

    page = alice.get(f"{net.meta}/delete", timeout=10)
    gone = alice.post(
        f"{net.meta}/delete",
        data={"csrf_token": csrf(page), "current_password": PASSWORD},
        timeout=10,
    )
    assert gone.status_code == 200 and gone.url.startswith(f"{net.meta}/login"), gone.url

    # Her token and her sessions stop at every service.
    for base, path in ((net.todo, "/api/trackers"), (net.paste, "/api/pastes")):
        wait_for(
            lambda: requests.get(base + path, headers=bearer(token), timeout=10).status_code == 401
        )
    for base, path in ((net.todo, "/create"), (net.paste, "/new")):
        answer = alice.get(base + path, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, (base, answer.status_code)
        assert "/oauth/authorize" in answer.headers["Location"]
    # Her subscriptions receive nothing more, and meta keeps none of them: the account's
    # receiver URLs, secrets and delivery logs are deleted with it.
    heard = len(receiver.got)
    _tracker(net, bob, "bob", "bobs", "public")  # her tracker and ticket are gone: his own
    kept = net.rows(
        "meta", f"SELECT id, url FROM srcore_webhook_subscription WHERE owner_id = {old_id}"
    )
    assert kept == [], kept
    # Her trackers go at todo, her pastes at paste (their account-deletion hooks); the
    # other pages still answer.
    stranger = browser()
    wait_for(lambda: stranger.get(public_ticket, timeout=10).status_code == 404)
    wait_for(lambda: stranger.get(public_paste, timeout=10).status_code == 404)
    for url in (f"{net.todo}/", f"{net.paste}/"):
        assert stranger.get(url, timeout=10).status_code == 200, url
    for url in (private_ticket, public_ticket.rsplit("/", 1)[0]):
        assert stranger.get(url, timeout=10).status_code == 404, url

    # Someone else registers the freed name and goes to todo and paste.
    carol = register(net, "alice")
    new_id = net.rows("meta", "SELECT id FROM user WHERE username = 'alice'")[0][0]
    assert new_id != old_id
    open_page_as(net, carol, "alice", net.todo, "/create")
    open_page_as(net, carol, "alice", net.paste, "/new")
    for url in (private_ticket, private_ticket.rsplit("/", 1)[0], public_ticket):
        assert carol.get(url, timeout=10).status_code == 404, url
    new_token = personal_token(net, carol, _SCOPES)
    for base, path in (
        (net.todo, "/api/trackers"),
        (net.paste, "/api/pastes"),
        (net.todo, "/api/webhooks"),
        (net.paste, "/api/webhooks"),
        (net.meta, "/api/webhooks"),
    ):
        answer = requests.get(base + path, headers=bearer(new_token), timeout=10)
        assert answer.status_code == 200 and answer.json()["results"] == [], (path, answer.text)
    page = carol.get(f"{net.todo}/webhooks", timeout=10)
    assert page.status_code == 200 and receiver.url not in page.text
    # Nor under the old account's id: its trackers were deleted with it.
    old_tracker = f"{net.todo}/~~{old_id}/pub"
    assert stranger.get(old_tracker, timeout=10).status_code == 404
    assert stranger.get(f"{old_tracker}/1", timeout=10).status_code == 404
    time.sleep(1)  # anything queued for her subscriptions would have arrived
    assert len(receiver.got) == heard, receiver.got[heard:]
