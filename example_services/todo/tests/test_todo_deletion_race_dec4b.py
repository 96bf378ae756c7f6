"""An account deleted at meta while its own write is under way: what the write makes must
not outlive the deletion.

The write is a real HTTP request (requests over a socket, a threaded server) held after
its token and user were checked; meanwhile the deletion meta pushes is applied, as the
service's event receiver applies it. Released, the write must not leave a tracker of the
deleted account behind: before, its tracker was created after the deletion's hook had
dropped the account's trackers, and stayed for good; so did a webhook subscription, with
its receiver URL and signing secret.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests


def test_a_tracker_created_while_its_owner_is_deleted_does_not_outlive_the_deletion(
    app: Any, app_url: str, make_token: Any, user: Any, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from todo import logic
    from todo.models import Tracker

    from srcore.auth.deletion import apply_deletions

    checked, go = threading.Event(), threading.Event()
    read_tracker = logic.read_tracker

    def held(*args: Any, **kwargs: Any) -> Any:
        checked.set()  # the token and the user were accepted; the write comes next
        assert go.wait(timeout=30)
        return read_tracker(*args, **kwargs)

    monkeypatch.setattr(logic, "read_tracker", held)
    bearer = {"Authorization": "Bearer " + make_token("todo/trackers:RW", user=user)}
    answers: list[requests.Response] = []

    def create() -> None:
        answers.append(
            requests.post(
                app_url + "/api/trackers", headers=bearer, json={"name": "late"}, timeout=60
            )
        )

    writer = threading.Thread(target=create, daemon=True)
    writer.start()
    try:
        assert checked.wait(timeout=30)
        assert apply_deletions(app, [user.id]) == []
    finally:
        go.set()
        writer.join(timeout=60)
    assert not writer.is_alive() and len(answers) == 1
    assert answers[0].status_code in (403, 503), (answers[0].status_code, answers[0].text[:200])
    assert make.count(Tracker) == 0


def test_a_webhook_subscribed_while_its_owner_is_deleted_does_not_outlive_the_deletion(
    app: Any, app_url: str, make_token: Any, user: Any, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import srcore.webhooks.subscriptions as subscriptions
    from srcore.auth.deletion import apply_deletions
    from srcore.webhooks.models import Subscription

    checked, go = threading.Event(), threading.Event()
    read_subscription = subscriptions.read_subscription

    def held(*args: Any, **kwargs: Any) -> Any:
        checked.set()
        assert go.wait(timeout=30)
        return read_subscription(*args, **kwargs)

    monkeypatch.setattr(subscriptions, "read_subscription", held)
    bearer = {"Authorization": "Bearer " + make_token("todo/tickets:RW", user=user)}
    body = {"url": "https://hooks.example.org/todo", "events": ["ticket:created"]}
    answers: list[requests.Response] = []

    def subscribe() -> None:
        answers.append(
            requests.post(app_url + "/api/webhooks", headers=bearer, json=body, timeout=60)
        )

    writer = threading.Thread(target=subscribe, daemon=True)
    writer.start()
    try:
        assert checked.wait(timeout=30)
        assert apply_deletions(app, [user.id]) == []
    finally:
        go.set()
        writer.join(timeout=60)
    assert not writer.is_alive() and len(answers) == 1
    assert answers[0].status_code in (403, 503), (answers[0].status_code, answers[0].text[:200])
    assert make.count(Subscription) == 0
