"""Screenshot the shared look in light and dark mode, on a desktop and a phone.

Run with ``.venv/bin/python tests/preview_look.py``; PNGs land in ``artifacts/look/``.
This is not a test: it serves sample pages built only from the shared templates and
stylesheet with a throwaway Flask app, and drives the system Chromium over them.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flask import Flask, flash, render_template, render_template_string, send_from_directory
from jinja2 import ChoiceLoader, FileSystemLoader
from werkzeug.serving import make_server

from srcore import rendering
from srcore.resources import resource_dir

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "artifacts" / "look"
NOW = datetime(2026, 11, 21, 14, 3, tzinfo=UTC)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Error:
    reason: str
    field: str | None = None


@dataclass
class FakeValidation:
    form: dict[str, str]
    errors: list[Error] = field(default_factory=list)

    def error_for(self, name: str) -> str | None:
        return next((e.reason for e in self.errors if e.field == name), None)

    def value(self, name: str, default: str = "") -> str:
        return self.form.get(name, default)


TICKETS = [
    ("open", 42, "Webhook deliveries retried forever after receiver returns 410", "alice",
     timedelta(minutes=5), 3, ["bug", "webhooks"]),
    ("open", 41, "Allow tracker owners to pin a ticket", "bob",
     timedelta(hours=3), 0, ["feature"]),
    ("resolved", 39, "Login loop when meta session expires mid-redirect", "carol",
     timedelta(days=2), 7, ["bug", "auth"]),
    ("open", 38, "Markdown tables overflow on narrow screens", "dmitri",
     timedelta(days=9), 1, ["ui"]),
    ("resolved", 35, "Document the SRCORE__ environment overrides", "alice",
     timedelta(days=95), 2, ["docs"]),
]  # fmt: skip

DESCRIPTION = """\
When a receiver answers **410 Gone**, we keep retrying for three days. A `410` means the
endpoint is gone for good, so the subscription should be *disabled* at once.

1. Subscribe `https://example.org/hook` to `ticket:created`.
2. Make the receiver answer `410`.
3. Watch the delivery log.

```python
if response.status_code == 410:
    subscription.disable(reason="receiver said 410 Gone")
```

> Retrying a permanent failure only burns worker time.

| Status | Retry? |
|:-------|-------:|
| 5xx    | yes    |
| 410    | no     |

See the [Standard Webhooks spec](https://www.standardwebhooks.com/) ~~or the old RFC~~.
<script>alert("never runs")</script>
"""

DELIVERIES = [
    ("ticket:created", "https://ci.example.org/hooks/srcore", "success", "200", "84 ms",
     timedelta(minutes=2)),
    ("ticket:updated", "https://chat.example.net/in/3f2a", "danger", "503", "1,204 ms",
     timedelta(minutes=9)),
    ("comment:created", "https://ci.example.org/hooks/srcore", "warning", "retrying", "—",
     timedelta(hours=1)),
]  # fmt: skip

LIST_PAGE = """\
{% extends "layout.html" %}
{% import "macros/pagination.html" as pagination %}
{% block title %}Tickets{% endblock %}
{% block content %}
<nav class="breadcrumbs" aria-label="Breadcrumbs">
  <a href="#">~alice</a> / <a href="#">srcore</a>
</nav>
<div class="page-header">
  <div>
    <h1>srcore tickets</h1>
    <p>Bugs and plans for the shared core.</p>
  </div>
  <div class="actions">
    <a class="btn" href="#">{{ icon("tag") }}Labels</a>
    <a class="btn btn-primary" href="/new">{{ icon("plus") }}New ticket</a>
  </div>
</div>
<ul class="item-list">
  {%- for status, num, title, who, ago, comments, labels in tickets %}
  <li class="item">
    {%- set status_icon = "circle-dot" if status == "open" else "check-circle" %}
    <span class="item-status {{ status }}">{{ icon(status_icon, label=status|capitalize) }}</span>
    <div class="item-main">
      <a class="item-title" href="#">{{ title }}</a>
      {% for l in labels %}<a class="label" href="#">{{ l }}</a> {% endfor %}
      <div class="item-meta">
        <span>#{{ num }}</span>
        <span class="badge badge-{{ status }}">{{ status|capitalize }}</span>
        <span>opened {{ timeago_tag(now - ago, now) }} by <a href="#">~{{ who }}</a></span>
      </div>
    </div>
    {%- if comments %}
    <span class="item-aside">{{ icon("comment") }}{{ comments }}</span>
    {%- endif %}
  </li>
  {%- endfor %}
</ul>
{{ pagination.pages(page, url_for_page) }}

<h2 style="margin-top:2.5rem">#42 · Webhook deliveries retried forever</h2>
<div class="comment">
  <div class="card">
    <div class="card-header">
      <strong>~alice</strong>&nbsp;commented {{ timeago_tag(now - tickets[0][4]) }}
    </div>
    <div class="card-body markdown">{{ description|markdown }}</div>
  </div>
</div>

<div class="grid" style="margin-top:2rem">
  <div class="card">
    <div class="card-header">
      <h2>Subscriptions</h2><span class="badge badge-accent">2 active</span>
    </div>
    <div class="card-body">
      <p class="muted">Deliveries in the last day: 118 succeeded, 3 failed.</p>
      <a class="btn btn-small" href="#">{{ icon("edit") }}Manage</a>
      <button class="btn btn-small btn-danger" type="button">{{ icon("trash") }}Delete</button>
    </div>
  </div>
  <div class="empty-state">
    {{ icon("tag") }}
    <h3>No labels yet</h3>
    <p>Labels group tickets by area or urgency.</p>
    <a class="btn btn-primary" href="#">{{ icon("plus") }}Create a label</a>
  </div>
</div>

<h2 style="margin-top:2.5rem">Recent deliveries</h2>
<div class="table-wrap">
  <table class="table">
    <thead>
      <tr><th>Event</th><th>Target</th><th>Status</th><th class="num">Time</th><th>When</th></tr>
    </thead>
    <tbody>
      {%- for event, target, kind, status, ms, minutes in deliveries %}
      <tr>
        <td><code>{{ event }}</code></td>
        <td>{{ target }}</td>
        <td><span class="badge badge-{{ kind }}">{{ status }}</span></td>
        <td class="num">{{ ms }}</td>
        <td>{{ timeago_tag(now - minutes) }}</td>
      </tr>
      {%- endfor %}
    </tbody>
  </table>
</div>
{{ pagination.cursor("#next") }}
{% endblock %}
"""

FORM_PAGE = """\
{% extends "layout.html" %}
{% import "macros/forms.html" as forms %}
{% block title %}New ticket{% endblock %}
{% block content %}
<div class="page-header"><h1>New ticket</h1></div>
<form class="form card form-card" method="post" novalidate>
  {{ forms.csrf() }}
  {{ forms.form_errors(valid) }}
  {{ forms.field(valid, "title", label="Title", required=true,
                 help="One line that says what is wrong or what you want.") }}
  {{ forms.textarea(valid, "description", label="Description", markdown=true, rows=5) }}
  {{ forms.select(valid, "severity", label="Severity", required=true,
                  options=[("", "Choose…"), ("low", "Low"), ("normal", "Normal"),
                           ("high", "High")]) }}
  {{ forms.field(valid, "email", label="Notify address", type="email",
                 help="Optional; we will email updates about this ticket.") }}
  {{ forms.checkbox(valid, "subscribe", label="Subscribe me to this ticket",
                    help="You can unsubscribe at any time.") }}
  <div class="form-actions">
    {{ forms.submit("Submit ticket", icon_name="check") }}
    <a class="btn" href="/">Cancel</a>
  </div>
</form>
{% endblock %}
"""


def make_app(*, production: bool = False, logged_in: bool = True) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.secret_key = "preview-only"
    app.jinja_loader = ChoiceLoader([FileSystemLoader(str(resource_dir("templates")))])
    app.jinja_env.globals["csrf_token"] = lambda: "preview-csrf-token"
    rendering.init_app(app, clock=lambda: NOW)
    static_dir = resource_dir("static")

    @app.route("/static/srcore/<path:filename>")
    def srcore_static(filename: str) -> Any:
        return send_from_directory(static_dir, filename)

    @app.context_processor
    def context() -> dict[str, Any]:
        from flask import request, url_for

        nav = [
            SimpleNamespace(id=sid, name=name, url=f"/{sid}", current=sid == "todo")
            for sid, name in [("meta", "meta"), ("git", "git"), ("todo", "todo"),
                              ("lists", "lists"), ("paste", "paste"), ("builds", "builds")]
        ]  # fmt: skip
        user = SimpleNamespace(username="alice") if logged_in else None
        return {
            "srcore": SimpleNamespace(
                site_name="Example Network",
                environment="production" if production else "development",
                is_production=production,
                service_id="todo",
                service_name="todo",
                nav=nav,
                user=user,
                login_url="/login",
                logout_url="/logout",
                request_id=request.headers.get("X-Request-Id", "7f3c9a1e0b2d"),
            ),
            "static_url": lambda filename: url_for("srcore_static", filename=filename),
        }

    @app.route("/")
    def tickets() -> str:
        flash("Ticket #42 was updated.", "success")
        flash("Webhook endpoint https://chat.example.net/in/3f2a is failing.", "warning")
        page = SimpleNamespace(page=3, pages=9, has_prev=True, has_next=True)
        return render_template_string(
            LIST_PAGE,
            tickets=TICKETS,
            deliveries=DELIVERIES,
            now=NOW,
            description=DESCRIPTION,
            page=page,
            url_for_page=lambda n: f"/?page={n}",
        )

    @app.route("/new")
    def new_ticket() -> str:
        valid = FakeValidation(
            form={
                "title": "",
                "description": "It crashes <b>sometimes</b>.",
                "email": "not-an-email",
            },
            errors=[
                Error("Title is required.", "title"),
                Error("Choose a severity.", "severity"),
                Error("Enter a valid email address, like name@example.org.", "email"),
                Error("This tracker only accepts tickets from confirmed accounts."),
            ],
        )
        return render_template_string(FORM_PAGE, valid=valid)

    @app.route("/<path:anything>")
    def missing(anything: str) -> tuple[str, int]:
        del anything
        return (
            render_template(
                "error.html",
                code=404,
                title="Page not found",
                message="There is no ticket, tracker or page at this address. It may have been "
                "deleted, or the link may be mistyped.",
            ),
            404,
        )

    return app


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    app = make_app()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    pages = {"tickets": "/", "form": "/new", "error": "/nowhere"}
    written: list[Path] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for width, height in ((1280, 900), (375, 812)):
                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                for scheme in ("light", "dark"):
                    page.emulate_media(color_scheme=scheme)
                    for name, path in pages.items():
                        response = page.goto(base + path)
                        if response is None or response.status >= 500:
                            raise RuntimeError(f"{path} failed to render")
                        target = OUT / f"{name}-{width}-{scheme}.png"
                        page.screenshot(path=str(target), full_page=True)
                        written.append(target)
                context.close()
            browser.close()
    finally:
        server.shutdown()
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
