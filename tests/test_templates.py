from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, flash, render_template, render_template_string
from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader

from srcore import rendering
from srcore.resources import resource_dir
from srcore.validation import FieldError, Validation

# -- a tiny app with the context srcore.app provides ----------------------------------


@dataclass
class Error:
    reason: str
    field: str | None = None


@dataclass
class FakeValidation:
    """What the form macros read from a Validation: errors, error_for, value."""

    form: dict[str, str] = field(default_factory=dict)
    errors: list[Error] = field(default_factory=list)

    def error_for(self, name: str) -> str | None:
        return next((e.reason for e in self.errors if e.field == name), None)

    def value(self, name: str, default: str = "") -> str:
        return self.form.get(name, default)


def srcore_context(**overrides: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "site_name": "Example Network",
        "environment": "development",
        "is_production": False,
        "service_id": "todo",
        "service_name": "Todo",
        "nav": [
            SimpleNamespace(id="meta", name="Meta", url="https://meta.example/", current=False),
            SimpleNamespace(id="todo", name="Todo", url="https://todo.example/", current=True),
            SimpleNamespace(id="git", name="Git", url="https://git.example/", current=False),
        ],
        "user": SimpleNamespace(username="alice"),
        "login_url": "/login?next=/tickets",
        "logout_url": "/logout",
        "request_id": "req-123",
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def make_app(*, own_templates: dict[str, str] | None = None, **srcore_overrides: Any) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.secret_key = "test"
    loaders: list[Any] = []
    if own_templates:
        loaders.append(DictLoader(own_templates))
    loaders.append(FileSystemLoader(str(resource_dir("templates"))))
    app.jinja_loader = ChoiceLoader(loaders)  # type: ignore[assignment]
    rendering.init_app(app)
    app.jinja_env.globals.update(
        srcore=srcore_context(**srcore_overrides),
        static_url=lambda filename: f"/static/srcore/v1/{filename}",
        csrf_token=lambda: "tok-42",
    )
    return app


@pytest.fixture
def app() -> Flask:
    return make_app()


@pytest.fixture
def render(app: Flask) -> Iterator[Callable[..., str]]:
    def _render(source: str, **context: Any) -> str:
        return render_template_string(source, **context)

    with app.test_request_context("/tickets"):
        yield _render


class Page(HTMLParser):
    """The start tags of a page, and the text inside each element id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v if v is not None else "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        want = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in want.items())]

    def one(self, tag: str, **attrs: str) -> dict[str, str]:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, found)
        return found[0]

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def assert_every_control_is_labelled(page: Page) -> None:
    label_for = {a.get("for") for t, a in page.tags if t == "label"}
    for tag, attrs in page.tags:
        if tag in {"input", "textarea", "select"} and attrs.get("type") != "hidden":
            assert attrs.get("id") in label_for, (tag, attrs)


# -- layout and nav -------------------------------------------------------------------

CHILD = """{% extends "layout.html" %}
{% block title %}Tickets{% endblock %}
{% block head %}<meta name="x-test" content="head">{% endblock %}
{% block content %}<h1>All tickets</h1>{% endblock %}
{% block scripts %}<script src="/x.js"></script>{% endblock %}"""


def test_layout_shell(render: Callable[..., str]) -> None:
    html = render(CHILD)
    page = Page(html)
    assert html.startswith("<!doctype html>")
    assert page.one("html")["lang"] == "en"
    assert page.one("meta", name="viewport")["content"] == "width=device-width, initial-scale=1"
    assert page.one("link", rel="stylesheet")["href"] == "/static/srcore/v1/srcore.css"
    assert "<title>Tickets · Example Network</title>" in html
    assert page.one("meta", name="x-test")
    assert page.one("main")["id"] == "main"
    assert page.one("a", class_="skip-link")["href"] == "#main"
    assert "<h1>All tickets</h1>" in html
    assert html.index('<script src="/x.js">') > html.index("</footer>")


def test_default_title_is_the_service(render: Callable[..., str]) -> None:
    html = render('{% extends "layout.html" %}')
    assert "<title>Todo · Example Network</title>" in html


def test_nav_lists_services_and_marks_the_current_one(render: Callable[..., str]) -> None:
    page = Page(render(CHILD))
    assert page.one("nav", aria_label="Services")
    links = [a for t, a in page.tags if t == "a" and "data-service" in a]
    assert [a["href"] for a in links] == [
        "https://meta.example/",
        "https://todo.example/",
        "https://git.example/",
    ]
    current = [a for a in links if "aria-current" in a]
    assert len(current) == 1
    assert current[0]["data-service"] == "todo"
    assert current[0]["class"] == "current"


def test_logged_in_user_menu_logs_out_with_a_post(render: Callable[..., str]) -> None:
    page = Page(render(CHILD))
    assert "alice" in page.all_text
    form = page.one("form", class_="logout-form")
    assert form["method"] == "post"
    assert form["action"] == "/logout"
    assert page.one("input", name="csrf_token")["value"] == "tok-42"
    assert "Log in" not in page.all_text


def test_anonymous_user_gets_a_login_link() -> None:
    app = make_app(user=None)
    with app.test_request_context("/"):
        page = Page(render_template_string(CHILD))
    login = page.one("a", href="/login?next=/tickets")
    assert login["class"] == "user-action"
    assert "Log in" in page.all_text
    assert not page.find("form", class_="logout-form")


def test_environment_banner_only_outside_production() -> None:
    for production, environment in ((False, "development"), (False, "staging")):
        app = make_app(is_production=production, environment=environment)
        with app.test_request_context("/"):
            page = Page(render_template_string(CHILD))
        assert page.one("div", class_="env-banner")["role"] == "note"
        assert f"{environment.capitalize()} environment — data may be reset" in page.all_text
    app = make_app(is_production=True, environment="production")
    with app.test_request_context("/"):
        page = Page(render_template_string(CHILD))
    assert not page.find("div", class_="env-banner")


def test_flash_messages_with_categories(app: Flask) -> None:
    @app.route("/")
    def index() -> str:
        flash("Saved <b>it</b>.", "success")
        flash("Careful.", "warning")
        flash("Broken.", "error")
        flash("Plain.")
        return render_template_string(CHILD)

    html = app.test_client().get("/").get_data(as_text=True)
    page = Page(html)
    kinds = [(a["class"], a["role"]) for t, a in page.tags if "flash " in a.get("class", "")]
    assert kinds == [
        ("flash flash-success", "status"),
        ("flash flash-warning", "status"),
        ("flash flash-error", "alert"),
        ("flash flash-info", "status"),
    ]
    assert "Saved &lt;b&gt;it&lt;/b&gt;." in html


def test_user_supplied_strings_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    app = make_app(user=SimpleNamespace(username=evil), site_name=evil)
    with app.test_request_context("/"):
        html = render_template_string(CHILD)
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html


def test_a_service_overrides_a_shared_template_by_name() -> None:
    own = {
        "nav.html": '<nav class="own-nav">mine</nav>',
        "page.html": CHILD,
    }
    app = make_app(own_templates=own)
    with app.test_request_context("/"):
        html = render_template("page.html")
    assert '<nav class="own-nav">mine</nav>' in html
    assert "site-nav" not in html


def test_the_header_block_can_be_replaced(render: Callable[..., str]) -> None:
    html = render('{% extends "layout.html" %}{% block header %}<p>bare</p>{% endblock %}')
    assert "<p>bare</p>" in html
    assert "site-nav" not in html


# -- forms ----------------------------------------------------------------------------

FORMS = '{% import "macros/forms.html" as forms %}'


def test_fresh_field(render: Callable[..., str]) -> None:
    html = render(
        FORMS + '{{ forms.field(None, "title", label="Title", required=true, '
        'help="One line.", placeholder="Crash on save") }}'
    )
    page = Page(html)
    inp = page.one("input", id="title")
    assert page.one("label", for_="title")
    assert inp["name"] == "title"
    assert inp["type"] == "text"
    assert "required" in inp
    assert "value" not in inp
    assert "aria-invalid" not in inp
    assert inp["aria-describedby"] == "title-help"
    assert page.one("p", id="title-help")["class"] == "field-help"
    assert "One line." in page.all_text
    assert page.one("span", class_="required")["aria-hidden"] == "true"
    assert_every_control_is_labelled(page)


def test_field_with_error_is_marked_and_refilled(render: Callable[..., str]) -> None:
    valid = FakeValidation(
        form={"email": '"><script>x</script>'},
        errors=[Error("Not an email address.", "email")],
    )
    html = render(
        FORMS + '{{ forms.field(valid, "email", label="Email", type="email", help="Work") }}',
        valid=valid,
    )
    page = Page(html)
    inp = page.one("input", id="email")
    assert inp["aria-invalid"] == "true"
    assert inp["aria-describedby"] == "email-help email-error"
    assert inp["value"] == '"><script>x</script>'
    assert "<script>" not in html
    assert page.one("p", id="email-error")["class"] == "field-error"
    assert "Not an email address." in page.all_text
    assert page.one("div", class_="field has-error")


def test_value_falls_back_to_the_given_default(render: Callable[..., str]) -> None:
    html = render(
        FORMS + '{{ forms.field(None, "name", label="Name", value="Old") }}'
        '{{ forms.field(valid, "other", label="Other", value="Kept") }}',
        valid=FakeValidation(),
    )
    page = Page(html)
    assert page.one("input", id="name")["value"] == "Old"
    assert page.one("input", id="other")["value"] == "Kept"


def test_password_is_never_refilled(render: Callable[..., str]) -> None:
    valid = FakeValidation(form={"password": "hunter2"})
    html = render(
        FORMS + '{{ forms.field(valid, "password", label="Password", type="password") }}',
        valid=valid,
    )
    assert "hunter2" not in html


def test_custom_id_and_extra_attributes(render: Callable[..., str]) -> None:
    html = render(
        FORMS + '{{ forms.field(None, "q", label="Search", id="search-q", type="search", '
        'attrs={"maxlength": 80, "autofocus": true, "disabled": false}) }}'
    )
    page = Page(html)
    inp = page.one("input", id="search-q")
    assert page.one("label", for_="search-q")
    assert inp["maxlength"] == "80"
    assert "autofocus" in inp
    assert "disabled" not in inp


def test_textarea(render: Callable[..., str]) -> None:
    valid = FakeValidation(
        form={"body": "</textarea><b>x</b>"}, errors=[Error("Too short.", "body")]
    )
    html = render(
        FORMS + '{{ forms.textarea(valid, "body", label="Body", required=true, '
        "markdown=true, rows=4) }}",
        valid=valid,
    )
    page = Page(html)
    area = page.one("textarea", id="body")
    assert area["rows"] == "4"
    assert area["aria-invalid"] == "true"
    assert area["aria-describedby"] == "body-help body-error"
    assert "&lt;/textarea&gt;&lt;b&gt;x&lt;/b&gt;</textarea>" in html
    assert "Markdown is supported." in page.all_text
    assert_every_control_is_labelled(page)


def test_select_marks_the_chosen_option(render: Callable[..., str]) -> None:
    source = (
        FORMS + '{{ forms.select(valid, "status", label="Status", '
        'options=[("open", "Open"), ("resolved", "Resolved"), "wontfix"], value="open") }}'
    )
    page = Page(render(source, valid=None))
    options = page.find("option")
    assert [o["value"] for o in options] == ["open", "resolved", "wontfix"]
    assert [o["value"] for o in options if "selected" in o] == ["open"]
    assert page.one("label", for_="status")

    valid = FakeValidation(form={"status": "wontfix"}, errors=[Error("Nope.", "status")])
    page = Page(render(source, valid=valid))
    assert [o["value"] for o in page.find("option") if "selected" in o] == ["wontfix"]
    assert page.one("select", id="status")["aria-invalid"] == "true"


def test_checkbox(render: Callable[..., str]) -> None:
    source = FORMS + '{{ forms.checkbox(valid, "notify", label="Notify me", checked=true) }}'
    page = Page(render(source, valid=None))
    box = page.one("input", id="notify")
    assert box["type"] == "checkbox"
    assert "checked" in box
    assert page.one("label", for_="notify")
    # A submitted form without the box means it was unticked.
    page = Page(render(source, valid=FakeValidation()))
    assert "checked" not in page.one("input", id="notify")
    page = Page(render(source, valid=FakeValidation(form={"notify": "on"})))
    assert "checked" in page.one("input", id="notify")


def test_form_errors(render: Callable[..., str]) -> None:
    source = FORMS + "{{ forms.form_errors(valid) }}"
    assert render(source, valid=None).strip() == ""
    assert render(source, valid=FakeValidation()).strip() == ""

    valid = FakeValidation(
        errors=[
            Error("Tracker is <closed>."),
            Error("Required.", "title"),
            Error("Too long.", "title"),
            Error("Bad.", "body"),
        ]
    )
    html = render(source, valid=valid)
    page = Page(html)
    assert page.one("div", class_="form-errors")["role"] == "alert"
    assert "Tracker is &lt;closed&gt;." in html
    assert "Please correct the 2 highlighted fields below." in page.all_text
    assert "Required." not in page.all_text

    valid = FakeValidation(errors=[Error("Required.", "title")])
    page = Page(render(source, valid=valid))
    assert "Please correct the highlighted field below." in page.all_text


def test_csrf_and_submit(render: Callable[..., str]) -> None:
    html = render(
        FORMS + "{{ forms.csrf() }}{{ forms.submit() }}"
        '{{ forms.submit("Delete", kind="danger", name="action", value="delete", '
        'icon_name="trash") }}'
    )
    page = Page(html)
    assert page.one("input", type="hidden") == {
        "type": "hidden",
        "name": "csrf_token",
        "value": "tok-42",
    }
    buttons = page.find("button")
    assert buttons[0] == {"type": "submit", "class": "btn btn-primary"}
    assert buttons[1]["class"] == "btn btn-danger"
    assert buttons[1]["name"] == "action"
    assert buttons[1]["value"] == "delete"
    assert "Save" in page.all_text
    assert page.one("svg", class_="icon icon-trash")


def test_macros_work_with_a_real_validation(app: Flask) -> None:
    with app.test_request_context("/"):
        valid = Validation(data={"title": "  <b>hi</b>", "count": "x"})
        valid.errors.append(FieldError(reason="Not a number.", field="count"))
        html = render_template_string(
            FORMS + '{{ forms.form_errors(valid) }}{{ forms.field(valid, "title", label="T") }}'
            '{{ forms.field(valid, "count", label="Count", type="number") }}',
            valid=valid,
        )
    page = Page(html)
    assert page.one("input", id="title")["value"] == "  <b>hi</b>"
    assert page.one("input", id="count")["aria-invalid"] == "true"
    assert "Not a number." in page.all_text
    assert_every_control_is_labelled(page)


# -- pagination -----------------------------------------------------------------------

PAGES = '{% import "macros/pagination.html" as pagination %}{{ pagination.pages(p, url_for_page) }}'


def pager(page: int, pages: int) -> SimpleNamespace:
    return SimpleNamespace(page=page, pages=pages, has_prev=page > 1, has_next=page < pages)


def page_url(n: int) -> str:
    return f"/tickets?page={n}"


def test_page_pagination_middle(render: Callable[..., str]) -> None:
    page = Page(render(PAGES, p=pager(5, 12), url_for_page=page_url))
    assert page.one("nav", class_="pagination")["aria-label"] == "Pagination"
    numbers = [a.get("aria-label", "") for a in page.find("a", class_="page-link")]
    assert numbers == ["Page 1", "Page 3", "Page 4", "Page 6", "Page 7", "Page 12"]
    current = page.one("a", aria_current="page")
    assert current["href"] == "/tickets?page=5"
    assert page.one("a", rel="prev")["href"] == "/tickets?page=4"
    assert page.one("a", rel="next")["href"] == "/tickets?page=6"
    assert len(page.find("span", class_="page-gap")) == 2


def test_page_pagination_edges(render: Callable[..., str]) -> None:
    page = Page(render(PAGES, p=pager(1, 3), url_for_page=page_url))
    assert page.one("span", class_="page-link page-prev")["aria-disabled"] == "true"
    assert page.one("a", rel="next")
    assert not page.find("span", class_="page-gap")
    page = Page(render(PAGES, p=pager(3, 3), url_for_page=page_url))
    assert page.one("span", class_="page-link page-next")["aria-disabled"] == "true"


def test_a_page_past_the_end_leads_back_to_the_last(render: Callable[..., str]) -> None:
    """An old link to page 9 of a list now 3 pages long (or 1): previous is the last page,
    not page 8, past the end too."""
    for pages in (3, 1):
        page = Page(render(PAGES, p=pager(9, pages), url_for_page=page_url))
        assert page.one("a", rel="prev")["href"] == f"/tickets?page={pages}"
        assert page.one("span", class_="page-link page-next")["aria-disabled"] == "true"


def test_single_page_renders_nothing(render: Callable[..., str]) -> None:
    assert render(PAGES, p=pager(1, 1), url_for_page=page_url).strip() == ""
    assert render(PAGES, p=pager(1, 0), url_for_page=page_url).strip() == ""


def test_cursor_pagination(render: Callable[..., str]) -> None:
    source = '{% import "macros/pagination.html" as pagination %}{{ pagination.cursor(next_url) }}'
    page = Page(render(source, next_url="/api/tickets?cursor=a&b=<c>"))
    link = page.one("a", rel="next")
    assert link["href"] == "/api/tickets?cursor=a&b=<c>"
    assert "Next →" in page.all_text
    assert render(source, next_url=None).strip() == ""


# -- error page -----------------------------------------------------------------------


def test_error_page(app: Flask) -> None:
    with app.test_request_context("/nope", headers={"Referer": "https://todo.example/x"}):
        html = render_template(
            "error.html", code=404, title="Not Found", message="No <such> ticket."
        )
    page = Page(html)
    assert "<title>404 Not Found · Example Network</title>" in html
    assert page.one("p", class_="error-code")
    assert "404" in page.all_text
    assert "<h1>Not Found</h1>" in html
    assert "No &lt;such&gt; ticket." in html
    assert page.one("a", class_="btn btn-primary")["href"] == "/"
    assert page.one("a", href="https://todo.example/x")
    assert "req-123" in page.all_text


def test_error_page_ignores_a_strange_referrer(app: Flask) -> None:
    with app.test_request_context("/", headers={"Referer": "javascript:alert(1)"}):
        html = render_template("error.html", code=500, title="Oops", message="")
    assert "javascript:" not in html
    assert "error-message" not in html


# -- empty states -----------------------------------------------------------------------


def test_empty_state_macro_draws_one_kind_of_empty_list(render: Callable[..., str]) -> None:
    source = """{% import "macros/empty.html" as empty %}
<section class="card"><div class="card-header"><h2>Trackers</h2></div>
{{ empty.state("No trackers yet", "A tracker collects tickets.", icon_name="tag",
               action_url="/create", action_label="Create one") }}</section>
{{ empty.state("Nothing here") }}"""
    html = render(source)
    page = Page(html)
    assert len(page.find("div", class_="empty-state")) == 2
    assert len(page.find("p", class_="empty-state-title")) == 2
    assert not page.find("h3")  # an empty list adds no heading to the page's outline
    assert page.one("a", class_="btn btn-primary")["href"] == "/create"
    assert "No trackers yet A tracker collects tickets. Create one Nothing here" in page.all_text


def test_every_example_service_draws_empty_lists_with_the_shared_macro() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    templates = sorted(root.glob("example_services/*/*/templates/**/*.html"))
    assert len(templates) > 10
    # srcore's own pages (the webhook pages every service shows) too; not the macro itself.
    shared = [p for p in sorted(root.glob("templates/**/*.html")) if p.parent.name != "macros"]
    assert any(p.parent.name == "webhooks" for p in shared)
    templates += shared
    hand_made = [
        str(path.relative_to(root))
        for path in templates
        if 'class="empty-state' in path.read_text(encoding="utf-8")
    ]
    assert hand_made == [], "use macros/empty.html"
