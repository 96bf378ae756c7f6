"""A person whose browser is set for privacy walks every web flow of meta, todo and paste, in
headless Chromium, meta (with its worker), todo and paste under gunicorn on 127.0.0.1.

Each profile is a browser of its own: JavaScript off; Referers never sent (Chromium's
``enable_referrers`` preference, what its ``--no-referrers`` switch, which this build ignores,
used to set: no Referer, and ``Origin: null`` on a form's POST, as the Fetch standard has it
under a no-referrer policy); third-party cookies blocked (the services are all on 127.0.0.1,
one site, and the login goes between them by top-level redirects: nothing is third-party);
and all three at once, its cookies cleared between steps where a person would. The person
registers, confirms the address from the mail, fails a login then logs in, logs in at todo
through meta, makes a tracker and a ticket, comments, edits settings, writes and edits a
paste, logs out everywhere, resets the password from the mail and turns two-factor sign-in
on (the key is written out beside the QR code: no JavaScript needed). Every step works, or
says plainly what it needs: never the same page again, never a "your session changed" for
something else.

Over https (where Flask-WTF asks a form for a Referer) the same forms go through Flask's test
client, environment production: a form naming its page by ``Origin`` alone, or with
``Origin: null`` by ``Sec-Fetch-Site: same-origin``, is taken; one naming no page is told
what it lacks.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from test_auth_e2e_more import Network

from srcore.testing.browser import CHROMIUM_ARGS, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new horse, battery and staple"
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000


class PasteNetwork(Network):
    paste: str


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasteNetwork]:
    """meta (and its webhook worker, which pushes logouts), todo and paste under gunicorn."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import (
        free_port,
        run_service,
        run_worker,
        serve_smtp_sink,
        write_network_config,
    )

    tmp = tmp_path_factory.mktemp("privacy")
    with serve_smtp_sink() as sink:
        ports = {"meta": free_port(), "todo": free_port(), "paste": free_port()}
        config = write_network_config(
            tmp / "config.ini",
            ports,
            global_keys={**sink.config_keys(), "revocation-pull-interval": "1s"},
        )
        for service in ports:
            upgrade_all(migration_target(service, config))
        with (
            run_service("meta", config, port=ports["meta"], timeout=60) as meta,
            run_worker("meta", config, timeout=60),
            run_service("todo", config, port=ports["todo"], timeout=60) as todo,
            run_service("paste", config, port=ports["paste"], timeout=60) as paste,
        ):
            made = PasteNetwork(config, meta, todo, tmp / "todo.db", sink)
            made.paste = paste
            yield made


#: The browsers: what each turns off.
PROFILES = {
    "no-javascript": {"javascript": False, "referrers": True, "third_party_cookies": True},
    "no-referrer": {"javascript": True, "referrers": False, "third_party_cookies": True},
    "no-third-party-cookies": {"javascript": True, "referrers": True, "third_party_cookies": False},
    "all-three": {"javascript": False, "referrers": False, "third_party_cookies": False},
}


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert chromium_path() is not None, "Chromium (/usr/bin/chromium) is needed"
    with sync_playwright() as running:
        yield running


def open_profile(playwright: Any, home: Path, settings: dict[str, bool]) -> Any:
    """A browser with a profile of its own in *home*, set as *settings* say."""
    (home / "Default").mkdir(parents=True)
    prefs: dict[str, Any] = {"enable_referrers": settings["referrers"]}
    if not settings["third_party_cookies"]:
        prefs["profile"] = {"block_third_party_cookies": True, "cookie_controls_mode": 1}
    (home / "Default" / "Preferences").write_text(json.dumps(prefs), encoding="utf-8")
    args = list(CHROMIUM_ARGS)
    if not settings["third_party_cookies"]:
        args.append("--test-third-party-cookie-phaseout")
    context = playwright.chromium.launch_persistent_context(
        str(home),
        executable_path=chromium_path(),
        args=args,
        java_script_enabled=settings["javascript"],
    )
    context.set_default_timeout(STEP_MS)
    context.set_default_navigation_timeout(STEP_MS)
    return context


class Watch:
    """What the browser sent: each POST's Referer and Origin, and every page it was shown."""

    def __init__(self, context: Any) -> None:
        self.posts: list[tuple[str, str | None, str | None]] = []
        context.on("request", self._request)

    def _request(self, request: Any) -> None:
        if request.method == "POST" and request.resource_type == "document":
            headers = request.all_headers()
            self.posts.append((request.url, headers.get("referer"), headers.get("origin")))


def send(page: Any, button: str) -> Any:
    """Press the button named *button* (in the page's main content, but Log out); the answer."""
    where = page if button == "Log out" else page.locator("main")
    with page.expect_navigation() as navigation:
        where.get_by_role("button", name=button).first.click()
    answer = navigation.value
    assert answer is not None
    body = page.locator("body").inner_text()
    assert answer.status < 500, body[:2000]
    assert "your session changed" not in body.lower(), body[:2000]
    return answer


def totp_now(secret: str, step: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(time.time() + 30 * step))


def walk(page: Any, context: Any, net: PasteNetwork, name: str, *, clear_cookies: bool) -> None:
    email = f"{name}@example.org"

    # Register, and confirm the address from the mail.
    page.goto(f"{net.meta}/register")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    answer = send(page, "Register")
    assert answer.status == 200, page.content()[:2000]
    link = net.sink.wait_for_link(email, "/confirm/")
    answer = page.goto(link)
    assert answer.status == 200, page.content()[:2000]

    # Log out of meta, then a wrong password, then the right one.
    page.goto(f"{net.meta}/profile")
    if page.url.startswith(f"{net.meta}/profile"):
        send(page, "Log out")
    if clear_cookies:
        context.clear_cookies()
    page.goto(f"{net.meta}/login")
    page.get_by_label("Username or email").fill(name)
    page.get_by_label("Password").fill("not the password at all")
    answer = send(page, "Log in")
    assert answer.status in (400, 401, 403, 200), answer.status
    assert page.url.startswith(f"{net.meta}/login"), page.url
    page.get_by_label("Password").fill(PASSWORD)
    if not page.get_by_label("Username or email").input_value():
        page.get_by_label("Username or email").fill(name)
    send(page, "Log in")
    assert not page.url.startswith(f"{net.meta}/login"), page.locator("main").inner_text()

    # Meta's profile: edit and save.
    page.goto(f"{net.meta}/profile")
    page.get_by_label("Location").fill("Lisbon")
    send(page, "Save profile")
    assert page.get_by_label("Location").input_value() == "Lisbon", page.content()[:2000]

    # Log in at todo through meta.
    page.goto(f"{net.todo}/login?next=/")  # meta knows the person: redirects all the way
    assert page.url == f"{net.todo}/", (page.url, page.locator("main").inner_text())
    assert page.locator(".user-name").inner_text().strip() == name

    # A tracker, a ticket, a comment, the tracker's settings.
    page.goto(f"{net.todo}/create")
    page.get_by_label("Name").fill("things")
    page.get_by_label("Description").fill("Things to do.")
    send(page, "Create tracker")
    tracker = f"{net.todo}/~{name}/things"
    assert page.url == tracker, page.url
    page.goto(f"{tracker}/new")
    page.get_by_label("Title").fill("First thing")
    page.get_by_label("Description").fill("Do it.")
    send(page, "Submit ticket")
    assert page.url.startswith(f"{tracker}/1"), page.url
    page.get_by_label("Add a comment").fill("Done, nearly.")
    send(page, "Comment")
    assert page.get_by_text("Done, nearly.").first.is_visible()
    page.goto(f"{tracker}/settings")
    page.get_by_label("Description").fill("Things to do, soon.")
    send(page, "Save settings")
    page.goto(tracker)
    assert page.get_by_text("Things to do, soon.").first.is_visible()

    # paste, logged in through meta as well: a paste, then an edit of it.
    page.goto(f"{net.paste}/login?next=/new")
    assert page.url == f"{net.paste}/new", (page.url, page.locator("main").inner_text())
    page.get_by_label("Title").fill("Notes")
    page.get_by_label("Text").fill("one\ntwo")
    send(page, "Create paste")
    assert f"{net.paste}/p/" in page.url, page.url
    shown = page.url
    page.goto(f"{shown}/edit")
    page.get_by_label("Text").fill("one\ntwo\nthree")
    send(page, "Save paste")
    assert page.url == shown, page.url
    assert "three" in page.locator("#paste").inner_text()

    # Log out everywhere, at meta: todo and paste forget the person too.
    page.goto(f"{net.meta}/profile")
    send(page, "Log out")
    for _ in range(100):
        page.goto(f"{net.todo}/create")
        if not page.url.startswith(f"{net.todo}/create"):
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail("todo kept the session meta ended")
    for _ in range(100):
        page.goto(f"{net.paste}/new")
        if not page.url.startswith(f"{net.paste}/new"):
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail("paste kept the session meta ended")
    if clear_cookies:
        context.clear_cookies()

    # Forgotten password: the link from the mail, a new password, a login with it.
    page.goto(f"{net.meta}/forgot")
    page.get_by_label("Email address").fill(email)
    send(page, "Send the link")
    link = net.sink.wait_for_link(email, "/reset/")
    page.goto(link)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    send(page, "Change my password")
    if page.url.startswith(f"{net.meta}/login"):
        page.get_by_label("Username or email").fill(name)
        page.get_by_label("Password").fill(NEW_PASSWORD)
        send(page, "Log in")
    assert not page.url.startswith((f"{net.meta}/login", f"{net.meta}/reset")), (
        page.url,
        page.locator("main").inner_text(),
    )

    # Two-factor sign-in on, from the key written beside the QR code; then a login with it.
    page.goto(f"{net.meta}/security/two-factor")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.get_by_label("Code from the app").fill(totp_now(secret))
    page.get_by_label("Your password").fill(NEW_PASSWORD)
    send(page, "Turn on")
    page.goto(f"{net.meta}/security/two-factor")
    assert page.get_by_role("heading", name="Turn two-factor sign-in off").is_visible()
    page.goto(f"{net.meta}/profile")
    send(page, "Log out")
    if clear_cookies:
        context.clear_cookies()
    page.goto(f"{net.meta}/login")
    page.get_by_label("Username or email").fill(name)
    page.get_by_label("Password").fill(NEW_PASSWORD)
    send(page, "Log in")
    assert page.url.startswith(f"{net.meta}/login/verify"), page.url
    page.get_by_label("Code").fill(totp_now(secret, 1))
    send(page, "Log in")
    assert page.url.startswith(f"{net.meta}/profile"), (page.url, page.locator("main").inner_text())


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_flow_works_in_a_browser_set_for_privacy(
    network: PasteNetwork, playwright: Any, tmp_path: Path, profile: str
) -> None:
    settings = PROFILES[profile]
    context = open_profile(playwright, tmp_path / "profile", settings)
    try:
        watch = Watch(context)
        page = context.pages[0] if context.pages else context.new_page()
        name = "p" + re.sub(r"[^a-z]", "", profile)[:20]
        walk(page, context, network, name, clear_cookies=profile == "all-three")
        # The profile did keep its Referers private: no form named the page it came from.
        assert watch.posts
        if not settings["referrers"]:
            assert all(referer is None for _, referer, _ in watch.posts), watch.posts
            # and, as under a no-referrer policy, no form named its origin either
            assert all(origin == "null" for _, _, origin in watch.posts), watch.posts
    finally:
        context.close()


def add_passkey(net: Network, username: str) -> None:
    """Give *username* a passkey, as if made on their phone (its key is never used here)."""
    import sqlite3

    with sqlite3.connect(net.config.parent / "meta.db") as db:
        (user_id,) = db.execute('SELECT id FROM "user" WHERE username = ?', (username,)).fetchone()
        db.execute(
            "INSERT INTO passkey_credential (user_id, credential_id, public_key, sign_count,"
            " user_handle, name, transports, backup_eligible, created)"
            " VALUES (?, ?, ?, 0, ?, 'phone', '', 0, CURRENT_TIMESTAMP)",
            (user_id, f"cred-{username}", b"\xa0", f"handle-{username}"),
        )


def test_a_passkey_asked_for_without_javascript_says_what_it_needs(
    network: Network, playwright: Any, tmp_path: Path
) -> None:
    """An account whose second factor is a passkey, in a browser with JavaScript off: the
    login's second step and the reset link's page say that a passkey needs JavaScript, where
    they showed only "Lost your passkeys?", a dead end that told nothing of the cause."""
    from meta.admin.cli import create_user

    net, name = network, "pkeyonly"
    create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
    add_passkey(net, name)
    context = open_profile(playwright, tmp_path / "profile", PROFILES["all-three"])
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{net.meta}/login")
        page.get_by_label("Username or email").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        send(page, "Log in")
        assert page.url.startswith(f"{net.meta}/login/verify"), page.url
        notice = page.locator("#passkey-unsupported")
        assert notice.is_visible()
        assert "needs JavaScript" in notice.inner_text()
        assert "Turn JavaScript on for this site" in notice.inner_text()

        context.clear_cookies()
        page.goto(f"{net.meta}/forgot")
        page.get_by_label("Email address").fill(f"{name}@example.org")
        send(page, "Send the link")
        page.goto(net.sink.wait_for_link(f"{name}@example.org", "/reset/"))
        notice = page.locator("#passkey-unsupported")
        assert notice.is_visible()
        assert "needs JavaScript" in notice.inner_text()
    finally:
        context.close()

    # With JavaScript, where WebAuthn is at hand, the passkey is offered and the notice gone.
    context = open_profile(playwright, tmp_path / "with-javascript", PROFILES["no-referrer"])
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{net.meta}/login")
        page.get_by_label("Username or email").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        send(page, "Log in")
        assert page.url.startswith(f"{net.meta}/login/verify"), page.url
        assert page.get_by_role("button", name="Use a passkey").is_visible()
        assert not page.locator("#passkey-unsupported").is_visible()
    finally:
        context.close()


def log_in_at_todo(page: Any, net: Network, username: str) -> None:
    """Log in at todo, through meta's form if meta asks for a password."""
    page.goto(f"{net.todo}/login?next=/")
    if page.url.startswith(f"{net.meta}/login"):
        page.get_by_label("Username or email").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        send(page, "Log in")
    assert page.url == f"{net.todo}/", page.url


@pytest.fixture
def without_referrers(playwright: Any, tmp_path: Path) -> Iterator[Any]:
    context = open_profile(playwright, tmp_path / "profile", PROFILES["no-referrer"])
    try:
        yield context
    finally:
        context.close()


def test_a_form_of_an_ended_session_comes_back_whole_without_referrers(
    network: Network, without_referrers: Any
) -> None:
    """A ticket written while the person logged out in another tab comes back with its text,
    in a browser that sends no Referer and so ``Origin: null``: the page that gives a form
    back took only a form naming this service's origin, and ``null`` got the plain "This
    form has expired" page, the text lost. The browser still says ``Sec-Fetch-Site:
    same-origin``, which another site's page cannot make it say."""
    from meta.admin.cli import create_user

    net, name = network, "pstale"
    create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
    page = without_referrers.pages[0] if without_referrers.pages else without_referrers.new_page()
    log_in_at_todo(page, net, name)
    page.goto(f"{net.todo}/create")
    page.get_by_label("Name").fill("stale")
    send(page, "Create tracker")
    page.goto(f"{net.todo}/~{name}/stale/new")
    page.get_by_label("Title").fill("Written at length")
    page.get_by_label("Description").fill("Every step, in detail.\nAnd more.")
    other = without_referrers.new_page()
    other.goto(f"{net.todo}/")
    with other.expect_navigation():
        other.get_by_role("button", name="Log out").click()
    log_in_at_todo(other, net, name)  # a new session of the same person

    with page.expect_navigation() as navigation:
        page.locator("main").get_by_role("button", name="Submit ticket").click()
    assert navigation.value.status == 400
    assert page.get_by_role("heading", name="Not sent").first.is_visible()
    form = page.locator("main form")
    assert form.locator("[name=description]").input_value().replace("\r\n", "\n") == (
        "Every step, in detail.\nAnd more."
    )
    send(page, "Send again")
    assert page.url.startswith(f"{net.todo}/~{name}/stale/"), page.url


def test_log_out_from_a_page_of_an_earlier_session_without_referrers(
    network: Network, without_referrers: Any
) -> None:
    """Log out pressed on a page opened before the person logged in again in another tab
    logs out, in a browser that sends ``Origin: null``: it said "This form has expired or
    is missing its security token", and logged nobody out."""
    from meta.admin.cli import create_user

    net, name = network, "pearlier"
    create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
    page = without_referrers.pages[0] if without_referrers.pages else without_referrers.new_page()
    log_in_at_todo(page, net, name)
    other = without_referrers.new_page()
    other.goto(f"{net.todo}/")
    with other.expect_navigation():
        other.get_by_role("button", name="Log out").click()
    log_in_at_todo(other, net, name)

    answer = send(page, "Log out")
    assert answer.status < 400, page.locator("body").inner_text()
    other.goto(f"{net.todo}/")  # (at meta the person is still logged in: todo's logout is its own)
    assert other.locator(".user-name").count() == 0, other.locator("body").inner_text()


# -- over https, in production, with Flask's client -------------------------------------------

META = "https://meta.example.org"
#: What each browser names a form's page by over https: an extension that strips the Referer
#: (the page's Origin stays), and a browser with Referers off (Origin null; Fetch Metadata).
HTTPS_BROWSERS = {
    "referer-stripped": {"Origin": META, "Sec-Fetch-Site": "same-origin"},
    "referrers-off": {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
}
_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture(scope="module")
def meta_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """meta in production at an https origin (mail to a sink), and the sink."""
    import meta

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import serve_smtp_sink, write_network_config

    tmp = tmp_path_factory.mktemp("meta-https")
    with serve_smtp_sink() as sink:
        config = write_network_config(
            tmp / "config.ini", {"meta": 1}, global_keys=sink.config_keys()
        )
        text = config.read_text().replace("development", "production")
        config.write_text(text.replace("http://127.0.0.1:1", META))
        config.chmod(0o600)
        upgrade_all(migration_target("meta", config))
        yield meta.create_app(config=config), sink


def text_of(response: Any) -> str:
    main = response.get_data(as_text=True).split("<main", 1)[-1]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))


@pytest.mark.parametrize("browser", list(HTTPS_BROWSERS))
def test_over_https_every_meta_form_is_taken_without_a_referer(
    meta_https: tuple[Any, Any], browser: str
) -> None:
    """Register, confirm, a failed then a good login, profile, reset, two-factor, logout, as
    a browser keeping its Referers private sends them to meta over https in production. With
    Referers off altogether (``Origin: null``) every form was refused: "your browser left out
    the Referer header", though the browser said ``Sec-Fetch-Site: same-origin``."""
    app, sink = meta_https
    headers = HTTPS_BROWSERS[browser]
    client = app.test_client()
    name = "h" + browser.replace("-", "")[:12]
    email = f"{name}@example.org"

    def post(path: str, page: str, **fields: str) -> Any:
        opened = client.get(page, base_url=META)
        token = _TOKEN.search(opened.get_data(as_text=True))
        assert token, (page, opened.status_code)
        data = {"csrf_token": token.group(1), **fields}
        answer = client.post(path, data=data, headers=headers, base_url=META)
        assert answer.status_code < 500
        assert "Referer" not in text_of(answer), text_of(answer)[:600]
        assert "session changed" not in text_of(answer), text_of(answer)[:600]
        return answer

    answer = post("/register", "/register", username=name, email=email, password=PASSWORD)
    assert answer.status_code in (200, 302), text_of(answer)[:600]
    confirmed = client.get(sink.wait_for_link(email, "/confirm/"), follow_redirects=True)
    assert confirmed.status_code == 200, text_of(confirmed)[:600]
    assert post("/logout", "/profile").status_code == 302

    wrong = post("/login", "/login", login=name, password="not the password at all")
    assert "Incorrect username or password" in text_of(wrong)
    assert post("/login", "/login", login=name, password=PASSWORD).status_code == 302

    saved = post("/profile", "/profile", location="Porto", url="", bio="", was="")
    assert saved.status_code in (200, 302), text_of(saved)[:600]
    assert 'value="Porto"' in client.get("/profile", base_url=META).get_data(as_text=True)

    assert post("/logout", "/profile").status_code == 302
    post("/forgot", "/forgot", email=email)
    link = sink.wait_for_link(email, "/reset/")
    reset_path = link.split(META, 1)[-1] if link.startswith(META) else "/" + link.split("/", 3)[3]
    changed = post(reset_path, reset_path, password=NEW_PASSWORD)
    assert changed.status_code in (200, 302), text_of(changed)[:600]
    if client.get("/login", base_url=META).status_code == 200:  # the reset did not log in
        assert post("/login", "/login", login=name, password=NEW_PASSWORD).status_code == 302
    page = client.get("/security/two-factor", base_url=META).get_data(as_text=True)
    found = re.search(r'id="totp-secret">([^<]+)<', page)
    assert found, page[:2000]
    secret = found.group(1).replace(" ", "")
    on = post(
        "/security/two-factor",
        "/security/two-factor",
        code=totp_now(secret),
        current_password=NEW_PASSWORD,
    )
    assert on.status_code in (200, 302), text_of(on)[:600]
    assert post("/logout", "/profile").status_code == 302

    client.delete_cookie("__Host-meta_session", domain="meta.example.org")
    asked = post("/login", "/login", login=name, password=NEW_PASSWORD)
    assert asked.status_code == 302 and "/login/verify" in asked.headers["Location"]
    verify = asked.headers["Location"].split(META, 1)[-1]
    done = post(
        "/login/verify",
        verify,
        code=totp_now(secret, 1),
        login_token=re.search(
            r'name="login_token" value="([^"]+)"',
            client.get(verify, base_url=META).get_data(as_text=True),
        ).group(1),
    )
    assert done.status_code == 302, text_of(done)[:600]


def test_over_https_a_form_naming_no_page_says_what_it_needs(
    meta_https: tuple[Any, Any],
) -> None:
    """A browser that sends neither Referer, nor Origin, nor Sec-Fetch-Site (an old one, or
    one set to keep them all) is told what the form needs, not that its session changed."""
    app, _ = meta_https
    client = app.test_client()
    opened = client.get("/login", base_url=META).get_data(as_text=True)
    token = _TOKEN.search(opened)
    assert token
    for headers in ({}, {"Origin": "null"}, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
        answer = client.post(
            "/login",
            data={"csrf_token": token.group(1), "login": "x", "password": "y"},
            headers=headers,
            base_url=META,
        )
        assert answer.status_code == 400
        assert "left out the Referer header" in text_of(answer)
        assert "session changed" not in text_of(answer)


def test_a_login_whose_cookie_was_cleared_midway_says_so(
    network: PasteNetwork, playwright: Any, tmp_path: Path
) -> None:
    """The person starts logging in at todo, clears the browser's cookies on meta's login
    page, then logs in: todo, whose cookie held the login it started, said "This login was
    not started here, or it took too long. Go back and log in again", and going back and
    logging in again, with cookies still refused, would say it again. It names the cookie."""
    from meta.admin.cli import create_user

    net, name = network, "pcleared"
    create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
    context = open_profile(playwright, tmp_path / "profile", PROFILES["all-three"])
    try:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{net.todo}/login?next=/create")
        assert page.url.startswith(f"{net.meta}/login"), page.url
        context.clear_cookies()
        page.get_by_label("Username or email").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        answer = send(page, "Log in")
        assert page.url.startswith(f"{net.todo}/oauth/callback"), page.url
        assert answer.status == 400
        said = page.locator("main").inner_text()
        assert "did not send back this site's cookie" in said, said
        assert "not started here" not in said
        # With the cookie kept this time, logging in again works at once.
        page.goto(f"{net.todo}/login?next=/create")
        assert page.url == f"{net.todo}/create", page.url
    finally:
        context.close()
