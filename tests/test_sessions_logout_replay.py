"""A service's session cookie copied before a logout at that service counts nowhere after it.

Someone copies a logged-in person's cookie (a shared computer, a stolen cookie); the
person then logs out of todo alone, in Chromium, by its "Log out" button. The copy,
replayed with ``requests`` against the todo process that took the logout and against
another todo process on the same database (another host, or another gunicorn worker),
logs no one in; the same person's login in another browser goes on. Run with and
without ``[global] redis-url``, which changes how a service's processes share what they
learn from meta, not where a logout is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from srcore.testing import (
    free_port,
    launch_chromium,
    require_or_skip,
    run_service,
    write_network_config,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
STEP_MS = 15_000
#: A database number of its own, so the Redis run shares no channel or key with others.
REDIS_URL = "redis://127.0.0.1:6379/9"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def network(tmp: Path, global_keys: dict[str, str]) -> Iterator[dict[str, str]]:
    """meta, todo, and a second todo process on todo's database and config."""
    from meta.admin.cli import create_user

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    ports = {"meta": free_port(), "todo": free_port()}
    keys = {"revocation-pull-interval": "1h", **global_keys}
    config = write_network_config(tmp / "config.ini", ports, global_keys=keys)
    for service in ports:
        upgrade_all(migration_target(service, config))
    create_user(str(config), "alice", "alice@example.org", PASSWORD)
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(run_service(name, config, port=port, timeout=60))
            for name, port in ports.items()
        }
        # Routing takes any Host: the other process answers as todo, on a port of its own.
        other = run_service("todo", config, port=free_port(), timeout=60)
        urls["other"] = stack.enter_context(other)
        yield urls


def log_in(page: Any, urls: dict[str, str], target: str) -> None:
    """Open *target*, logging in at meta's form if meta asks (not when the browser is
    logged in at meta already: it passes straight through)."""
    page.goto(target, timeout=STEP_MS)
    if page.url.startswith(f"{urls['meta']}/login"):
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation(timeout=STEP_MS):
            page.click("button[type=submit]")
        page.goto(target, timeout=STEP_MS)
    assert page.url == target, page.url


def replay(base: str, cookie: str) -> int:
    """A page only alice sees, fetched with nothing but the copied cookie."""
    answer = requests.get(
        f"{base}/create", cookies={"todo_session": cookie}, allow_redirects=False, timeout=15
    )
    if answer.status_code == 302:
        # Sent to log in: the cookie is nobody's session here.
        assert answer.headers["Location"].split("?")[0].endswith("/oauth/authorize")
    return answer.status_code


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory", "redis"])
def test_a_cookie_copied_before_a_logout_is_dead_at_every_process(
    tmp_path: Path, with_redis: bool
) -> None:
    if with_redis:
        require_or_skip(_redis_up(), "Redis")
    keys = {"redis-url": REDIS_URL} if with_redis else {}
    with network(tmp_path, keys) as urls, launch_chromium() as chromium:
        victim, elsewhere = chromium.new_context(), chromium.new_context()
        try:
            page = victim.new_page()
            log_in(page, urls, f"{urls['todo']}/create")
            other_browser = elsewhere.new_page()
            log_in(other_browser, urls, f"{urls['todo']}/create")
            (copied,) = [c["value"] for c in victim.cookies() if c["name"] == "todo_session"]
            assert [replay(base, copied) for base in (urls["todo"], urls["other"])] == [200, 200]

            with page.expect_navigation(timeout=STEP_MS):
                page.click("form.logout-form button")
            assert page.url.startswith(urls["meta"]), page.url
            assert "todo_session" not in {c["name"] for c in victim.cookies()}

            # The copy is refused by the process that took the logout and by the other.
            assert [replay(base, copied) for base in (urls["other"], urls["todo"])] == [302, 302]
            # alice's login in the other browser is hers still, at both processes.
            for base in (urls["other"], urls["todo"]):
                answer = other_browser.goto(f"{base}/create", timeout=STEP_MS)
                assert answer.status == 200 and other_browser.url == f"{base}/create"
            # Logging in again in the first browser (meta passes it through) starts a
            # session of its own, and the copy stays dead.
            log_in(page, urls, f"{urls['todo']}/create")
            assert replay(urls["other"], copied) == 302
        finally:
            victim.close()
            elsewhere.close()
