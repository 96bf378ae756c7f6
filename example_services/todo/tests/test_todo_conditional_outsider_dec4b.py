"""Conditions the API ignored, sent by requests over a real socket: ``If-None-Match`` on
a write (``*`` is "only if it does not exist"; a tag is "only if it is not this version")
and ``If-Match`` on a read. Both are 412s (RFC 9110, sections 13.1.1, 13.1.2, 13.2.2),
and neither tells another user that a resource exists.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

TICKET = "/api/trackers/bugs/tickets/1"
TRACKER = "/api/trackers/bugs"


@pytest.fixture
def alice(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": "Bearer " + make_token("todo/tickets:RW todo/trackers:RW", user=user)}


def test_if_none_match_on_a_write_is_a_412_and_changes_nothing(
    app_url: str, alice: dict[str, str], ticket: Any
) -> None:
    tag = requests.get(app_url + TICKET, headers=alice, timeout=30).headers["ETag"]
    for value in ("*", tag, f"W/{tag}", f'"other", {tag}', "garbage"):
        answer = requests.patch(
            app_url + TICKET,
            headers={**alice, "If-None-Match": value},
            json={"title": "Overwritten"},
            timeout=30,
        )
        assert answer.status_code == 412, (value, answer.status_code, answer.text[:200])
        assert answer.json()["errors"][0]["field"] == "If-None-Match"
        assert "ETag" not in answer.headers
    tracker_tag = requests.get(app_url + TRACKER, headers=alice, timeout=30).headers["ETag"]
    for value in ("*", tracker_tag):
        gone = requests.delete(
            app_url + TRACKER, headers={**alice, "If-None-Match": value}, timeout=30
        )
        assert gone.status_code == 412, (value, gone.status_code)
    now = requests.get(app_url + TICKET, headers=alice, timeout=30)
    assert now.json()["title"] == "It crashes" and now.headers["ETag"] == tag
    # A tag of another version: the change goes through.
    changed = requests.patch(
        app_url + TICKET,
        headers={**alice, "If-None-Match": '"not-this-one"'},
        json={"title": "Changed"},
        timeout=30,
    )
    assert changed.status_code == 200 and changed.json()["title"] == "Changed"


def test_if_match_on_a_read_names_the_version_it_wants(
    app_url: str, alice: dict[str, str], ticket: Any
) -> None:
    tag = requests.get(app_url + TICKET, headers=alice, timeout=30).headers["ETag"]
    for method in ("GET", "HEAD"):
        for path in (TICKET, TRACKER):
            stale = requests.request(
                method, app_url + path, headers={**alice, "If-Match": '"old"'}, timeout=30
            )
            assert stale.status_code == 412, (method, path, stale.status_code)
            assert "ETag" not in stale.headers
    assert requests.get(app_url + TICKET, headers={**alice, "If-Match": tag}, timeout=30).ok
    assert requests.get(app_url + TICKET, headers={**alice, "If-Match": "*"}, timeout=30).ok
    # If-Match is read first: a stale If-Match with a current If-None-Match is a 412.
    both = {**alice, "If-Match": '"old"', "If-None-Match": tag}
    assert requests.get(app_url + TICKET, headers=both, timeout=30).status_code == 412


def test_conditions_on_another_users_resources_are_404s(
    app_url: str, make_token: Any, bob: Any, ticket: Any
) -> None:
    mallory = {
        "Authorization": "Bearer " + make_token("todo/tickets:RW todo/trackers:RW", user=bob)
    }
    for headers in ({"If-Match": '"x"'}, {"If-None-Match": "*"}, {"If-Match": "*"}):
        for method, path in (("GET", TICKET), ("PATCH", TICKET), ("DELETE", TRACKER)):
            answer = requests.request(
                method, app_url + path, headers={**mallory, **headers}, json={}, timeout=30
            )
            assert answer.status_code == 404, (method, path, headers, answer.status_code)


def test_empty_list_elements_around_a_tag_are_read_past(
    app_url: str, alice: dict[str, str], ticket: Any
) -> None:
    """RFC 9110 5.6.1.2: a list may hold empty elements (a client joining tags leaves a
    comma); the tag in it still matches, where it was taken for garbage (412, no 304)."""
    tag = requests.get(app_url + TICKET, headers=alice, timeout=30).headers["ETag"]
    for value in (f"{tag},", f", {tag}", f'"old", , {tag}'):
        cached = requests.get(
            app_url + TICKET, headers={**alice, "If-None-Match": value}, timeout=30
        )
        assert cached.status_code == 304, (value, cached.status_code)
    changed = requests.patch(
        app_url + TICKET,
        headers={**alice, "If-Match": f", {tag},"},
        json={"title": "Y"},
        timeout=30,
    )
    assert changed.status_code == 200, changed.text[:200]
    for value in (",", ", ,", '"a" "b"'):
        refused = requests.patch(
            app_url + TICKET, headers={**alice, "If-Match": value}, json={"title": "Z"}, timeout=30
        )
        assert refused.status_code == 412, (value, refused.status_code)
