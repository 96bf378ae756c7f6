"""Optimistic concurrency in todo's API: ETag, If-Match (412) and If-None-Match (304).

Two clients that read a ticket and each PATCH it must not overwrite each other unseen
when they say which version they read; clients that do not say keep working as before.
"""

from __future__ import annotations

import pytest

TICKET = "/api/trackers/bugs/tickets/1"
TRACKER = "/api/trackers/bugs"


def test_get_has_a_strong_etag_and_if_none_match_is_304(client, auth, ticket):
    headers = auth("todo/tickets:RO")
    first = client.get(TICKET, headers=headers)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag.startswith('"') and not tag.startswith("W/")
    assert client.get(TICKET, headers=headers).headers["ETag"] == tag  # stable
    again = client.get(TICKET, headers={**headers, "If-None-Match": tag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == tag
    weak = client.get(TICKET, headers={**headers, "If-None-Match": f'"x", W/{tag}'})
    assert weak.status_code == 304  # If-None-Match compares weakly
    assert client.get(TICKET, headers={**headers, "If-None-Match": "*"}).status_code == 304
    other = client.get(TICKET, headers={**headers, "If-None-Match": '"other"'})
    assert other.status_code == 200 and other.get_json()["title"] == "It crashes"


def test_two_patches_from_the_same_version_the_second_is_412(client, auth, ticket):
    headers = auth("todo/tickets:RW")
    tag = client.get(TICKET, headers=headers).headers["ETag"]
    first = client.patch(TICKET, json={"title": "A"}, headers={**headers, "If-Match": tag})
    assert first.status_code == 200 and first.get_json()["title"] == "A"
    new_tag = first.headers["ETag"]
    assert new_tag != tag
    assert client.get(TICKET, headers=headers).headers["ETag"] == new_tag
    second = client.patch(TICKET, json={"title": "B"}, headers={**headers, "If-Match": tag})
    assert second.status_code == 412
    assert second.is_json and second.get_json()["errors"][0]["field"] == "If-Match"
    assert client.get(TICKET, headers=headers).get_json()["title"] == "A"
    # A list holding the current tag matches; so does "*"; no header works as before.
    listed = {**headers, "If-Match": f'"nope", {new_tag}'}
    assert client.patch(TICKET, json={"title": "C"}, headers=listed).status_code == 200
    star = {**headers, "If-Match": "*"}
    assert client.patch(TICKET, json={"title": "D"}, headers=star).status_code == 200
    assert client.patch(TICKET, json={"title": "E"}, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "value",
    ["garbage", "W/{tag}", "{bare}", '"unterminated', ",", "", '"a" junk', '"x", ' * 1000],
)
def test_if_match_that_names_no_current_strong_tag_is_412(client, auth, ticket, value):
    headers = auth("todo/tickets:RW")
    tag = client.get(TICKET, headers=headers).headers["ETag"]
    sent = value.format(tag=tag, bare=tag.strip('"'))
    response = client.patch(TICKET, json={"title": "Z"}, headers={**headers, "If-Match": sent})
    assert response.status_code == 412, sent[:40]
    assert client.get(TICKET, headers=headers).get_json()["title"] == "It crashes"


def test_tracker_patch_and_delete_honour_if_match(client, auth, tracker):
    headers = auth("todo/trackers:RW")
    tag = client.get(TRACKER, headers=headers).headers["ETag"]
    changed = client.patch(
        TRACKER, json={"description": "new"}, headers={**headers, "If-Match": tag}
    )
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    stale = client.delete(TRACKER, headers={**headers, "If-Match": tag})
    assert stale.status_code == 412 and stale.is_json
    stale_patch = client.patch(
        TRACKER, json={"description": "lost"}, headers={**headers, "If-Match": tag}
    )
    assert stale_patch.status_code == 412
    assert client.get(TRACKER, headers=headers).get_json()["description"] == "new"
    current = {**headers, "If-Match": changed.headers["ETag"]}
    assert client.delete(TRACKER, headers=current).status_code == 204
    assert client.get(TRACKER, headers=headers).status_code == 404


def test_the_description_lists_the_headers_and_answers(client):
    doc = client.get("/api/openapi.json").get_json()
    ticket = doc["paths"]["/api/trackers/{name}/tickets/{number}"]
    get, patch = ticket["get"], ticket["patch"]
    assert {"$ref": "#/components/parameters/IfNoneMatch"} in get["parameters"]
    assert "304" in get["responses"] and "ETag" in get["responses"]["200"]["headers"]
    assert {"$ref": "#/components/parameters/IfMatch"} in patch["parameters"]
    assert patch["responses"]["412"] == {"$ref": "#/components/responses/Error412"}
    delete = doc["paths"]["/api/trackers/{name}"]["delete"]
    assert {"$ref": "#/components/parameters/IfMatch"} in delete["parameters"]
    components = doc["components"]
    assert components["parameters"]["IfMatch"]["in"] == "header"
    assert "Error412" in components["responses"]
    # A list has no tag of its own: it says nothing of these headers.
    listing = doc["paths"]["/api/trackers/{name}/tickets"]["get"]
    assert "304" not in listing["responses"]
