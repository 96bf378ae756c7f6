"""What README.md, docs/tutorial.md and docs/architecture.md promise a service author,
tried as a newcomer writing a service on srcore uses it: the calls as the docs show them,
and the mistakes a newcomer makes with them. Each test names the sentence it holds.

Most of these pages' promises have tests elsewhere (tests/test_docs.py,
test_tutorial.py, test_readme_promises.py, test_scaffold_outsider.py,
test_architecture_promises.py, test_docs_promises_dec4.py and the services' own suites);
this module holds the ones that had none.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_meta import FakeMeta, build_service
from flask import Blueprint

from srcore.conditional import conditional, entity_tag, if_match

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"
THING = {"id": 1, "title": "one"}
THING_DATA = {"id": 1, "name": "one"}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    """The sample service, served as in production (errors answered, not raised), with the
    views a newcomer adds to it registered by each test."""
    app = build_service(tmp_path, FakeMeta())
    app.config.update(WTF_CSRF_ENABLED=False, PROPAGATE_EXCEPTIONS=False)
    yield app
    app.extensions["srcore"].db.dispose()


@pytest.fixture
def service_db(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """The sample service on SQLite and on PostgreSQL."""
    app = build_service(tmp_path, FakeMeta(), database_url=database_url)
    yield app
    app.extensions["srcore"].db.dispose()


# -- tutorial, "Where next": @conditional and if_match -------------------------------------


def test_if_match_in_a_write_view_not_marked_conditional_is_a_412_not_a_500(
    service: Any,
) -> None:
    """The tutorial: "mark the view of one item @conditional and, in a write, call
    if_match(item_json(item)) once the row is locked ... a PATCH, PUT or DELETE whose
    If-Match names another version is a 412 with the usual error body". A newcomer marks
    the GET and calls if_match in the write, or moves the decorator off a view: the
    refusal if_match raises used to reach the client as a 500, from the API and a page
    alike."""
    bp = Blueprint("newcomer", __name__)

    @bp.get("/api/things/1")
    @conditional
    def get_thing() -> Any:
        return THING

    @bp.patch("/api/things/1")
    def patch_thing() -> Any:  # @conditional forgotten
        if_match(THING)
        return {**THING, "title": "two"}

    @bp.post("/things/1/edit")
    def edit_thing() -> Any:  # a page's form, with the header a script may send
        if_match(THING)
        return "saved"

    service.register_blueprint(bp)
    client = service.test_client()
    tag = client.get("/api/things/1").headers["ETag"]
    with service.app_context():
        assert tag == entity_tag(THING)

    stale = client.patch("/api/things/1", json={}, headers={"If-Match": '"another"'})
    assert stale.status_code == 412, stale.get_data(as_text=True)[:300]
    (error,) = stale.get_json()["errors"]
    assert error["field"] == "If-Match" and "changed since" in error["reason"]
    assert client.patch("/api/things/1", json={}, headers={"If-Match": tag}).status_code == 200
    star = client.patch("/api/things/1", json={}, headers={"If-None-Match": "*"})
    assert star.status_code == 412 and star.get_json()["errors"][0]["field"] == "If-None-Match"

    page = client.post("/things/1/edit", headers={"If-Match": "garbage"})
    assert page.status_code == 412 and page.mimetype == "text/html"
    assert client.post("/things/1/edit").status_code == 200


# -- tutorial, section 4: the tree of what `srcore new-service` writes ---------------------


def _tutorial_tree() -> list[str]:
    """The files of section 4's tree, as paths below the service's directory."""
    text = TUTORIAL.read_text(encoding="utf-8")
    (block,) = re.findall(r"^```text\n(bookmarks/\n.*?)^```", text, re.S | re.M)
    files, parents = [], []
    for line in block.splitlines()[1:]:
        found = re.match(r"^((?:│   |    )*)[├└]── (\S+)", line)
        assert found is not None, line
        depth = len(found.group(1)) // 4
        parents[depth:] = []
        name = found.group(2)
        if name.endswith("/"):
            parents.append(name)
        else:
            files.append("".join(parents) + name)
    return files


def test_the_tree_the_tutorial_draws_is_what_new_service_writes(tmp_path: Path) -> None:
    """Section 4 ("A tour of what was generated") draws every file of the package; a file
    the generator adds, drops or moves makes the tour wrong."""
    from srcore.scaffold.generate import create_service

    made = create_service("bookmarks", tmp_path, installed=()).path
    written = sorted(
        str(path.relative_to(made))
        for path in made.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    drawn = sorted(_tutorial_tree())
    assert len(drawn) == len(written) == 12
    migration = "bookmarks/migrations/versions/…_create_tables.py"
    assert migration in drawn
    assert [p for p in written if p.endswith("_create_tables.py")] == [
        p for p in written if p.startswith("bookmarks/migrations/")
    ]
    normal = sorted(migration if p.startswith("bookmarks/migrations/") else p for p in written)
    assert normal == drawn


# -- README, Webhooks: emit names the owner and how visible the thing is -------------------


class _PlainVisibility(enum.Enum):
    public = "public"


class _StrVisibility(enum.StrEnum):
    public = "public"


class _OldStrVisibility(str, enum.Enum):  # noqa: UP042 (str() is "_OldStrVisibility.unlisted")
    unlisted = "unlisted"


@pytest.mark.parametrize(
    ("visibility", "says"),
    [
        (True, "visibility must be a string such as 'public'"),
        (_PlainVisibility.public, "visibility must be a string such as 'public'"),
        ("Public", "did you mean 'public'?"),
        (" public", "did you mean 'public'?"),
        ("v" * 17, "at most 16 characters"),
        ("", "at most 16 characters"),
    ],
)
def test_a_visibility_the_fan_out_would_misread_is_refused_by_emit(
    service_db: Any, visibility: Any, says: str
) -> None:
    """The README: a service emits its events "naming the owner of what changed and how
    visible it is now", and a ``readers`` event goes to every subscriber "when the thing was
    `public`". The fan-out compares the recorded visibility with ``"public"``: ``"Public"``
    or ``True`` were recorded as given and the event silently stayed the owner's; a plain
    Enum's member failed the request in the database driver; a long name passed SQLite and
    failed PostgreSQL's column. emit refuses them, naming the event."""
    from sqlalchemy import func, select

    from srcore.db import session
    from srcore.webhooks import emit
    from srcore.webhooks.models import OutboxRow

    with service_db.test_request_context("/", method="POST"):
        with pytest.raises((TypeError, ValueError), match=re.escape(says)) as refused:
            emit("thing:created", THING_DATA, owner_id=1, visibility=visibility)
        assert "'thing:created'" in str(refused.value)
        session.rollback()
        emit("thing:created", THING_DATA, owner_id=1, visibility=_StrVisibility.public)
        emit("thing:created", THING_DATA, owner_id=1, visibility=_OldStrVisibility.unlisted)
        emit("thing:created", THING_DATA, owner_id=1)
        session.commit()
        recorded = session.scalars(select(OutboxRow.visibility).order_by(OutboxRow.id)).all()
        assert recorded == ["public", "unlisted", None]
        assert type(recorded[0]) is str
        assert session.scalar(select(func.count()).select_from(OutboxRow)) == 3


def test_the_generated_pyproject_carries_srcores_rules_and_the_groups_the_tutorial_names(
    tmp_path: Path,
) -> None:
    """Section 5: "`[tool.ruff]`: srcore's own rules, 100 columns; `[tool.mypy]`: `strict`,
    on the package and its tests", and "`--group bookmarks/pyproject.toml:test` adds
    pytest-xdist ... its `lint` group holds ruff and mypy". A rule srcore adds to its own
    list and not to the generated one (or back) makes the sentence false."""
    from srcore.scaffold.generate import create_service

    made = create_service("bookmarks", tmp_path, installed=()).path
    generated = tomllib.loads((made / "pyproject.toml").read_text(encoding="utf-8"))
    own = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert generated["tool"]["ruff"]["line-length"] == own["tool"]["ruff"]["line-length"] == 100
    assert generated["tool"]["ruff"]["lint"]["select"] == own["tool"]["ruff"]["lint"]["select"]
    assert generated["tool"]["mypy"]["strict"] is True
    assert generated["tool"]["mypy"]["files"] == ["bookmarks", "tests"]
    groups = generated["dependency-groups"]

    def names(group: str) -> list[str]:
        return [re.split(r"[<>=~!\[ ]", requirement)[0] for requirement in groups[group]]

    assert "pytest-xdist" in names("test") and "pytest" in names("test")
    assert names("lint") == ["ruff", "mypy"]
    entry = generated["project"]["entry-points"]["srcore.services"]
    assert entry == {"bookmarks": "bookmarks"}


# -- README: @login_required for pages, @oauth for API routes, below the route -------------


def test_a_guard_written_above_the_route_fails_the_app_instead_of_opening_the_view(
    service: Any,
) -> None:
    """The README: "each below the route decorator (written above it, it would guard
    nothing: registering a blueprint with such a view fails, naming it)". Above it, Flask
    registers the view before it is guarded and the decorator's wrapper is thrown away:
    the API took writes without a token and the page showed itself to anyone, and nothing
    said so (the architecture's "fail loudly and clearly")."""
    import srcore

    open_api = Blueprint("open_api", __name__)

    @srcore.oauth("sample/things:RW")  # a newcomer's order: above the route
    @open_api.post("/api/open")
    def take_write() -> Any:
        return {"written": True}

    with pytest.raises(RuntimeError, match=r"open_api\.take_write .*@oauth\('sample/things:RW'\)"):
        service.register_blueprint(open_api)

    open_page = Blueprint("open_page", __name__)

    @srcore.login_required
    @open_page.get("/mine")
    def mine() -> str:
        return "private"

    with pytest.raises(RuntimeError, match=r"open_page\.mine .*@login_required.*below"):
        service.register_blueprint(open_page)

    # The order the README shows, and one function guarded twice, register as before.
    guarded = Blueprint("guarded", __name__)

    def shared() -> Any:
        return {"ok": True}

    guarded.get("/api/read")(srcore.oauth("sample/things:RO")(shared))
    guarded.post("/api/write", endpoint="write")(srcore.oauth("sample/things:RW")(shared))
    guarded.get("/page", endpoint="page")(srcore.login_required(shared))
    service.register_blueprint(guarded)
    client = service.test_client()
    assert client.get("/api/read").status_code == 401
    assert client.post("/api/write").status_code == 401
    assert client.get("/page").status_code == 302
    assert client.post("/api/open").status_code == 404
    assert client.get("/mine").status_code == 404
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "registering a blueprint with such a view fails, naming it" in readme


def test_login_required_on_an_api_route_fails_the_app_instead_of_every_call(
    service: Any,
) -> None:
    """The README: "`@srcore.login_required` for pages and `@srcore.oauth(...)` for API
    routes"; the architecture: "Under `/api/` there is no cookie session". A newcomer's
    @login_required on an API route answered every call, with or without a token, with a
    500. Registering it now fails, saying what to use."""
    import srcore

    api = Blueprint("cookie_api", __name__)

    @api.get("/api/mine")
    @srcore.login_required
    def mine() -> Any:
        return {"user": srcore.current_user.username}

    with pytest.raises(RuntimeError, match=r"cookie_api\.mine of /api/mine .*@oauth\("):
        service.register_blueprint(api)
    # The same function under @oauth, or on a page, registers as before.
    fine = Blueprint("fine", __name__)
    fine.get("/api/both", endpoint="both")(srcore.oauth("sample/things:RO")(mine.__wrapped__))
    fine.get("/mine")(srcore.login_required(mine.__wrapped__))
    service.register_blueprint(fine)
    client = service.test_client()
    assert client.get("/api/both").status_code == 401
    assert client.get("/mine").status_code == 302
    assert client.get("/api/mine").status_code == 404


# -- tutorial, "Where next": where the used one-time form tokens are kept -------------------


def test_the_core_migration_the_tutorial_names_makes_the_used_tokens_table() -> None:
    """ "Used tokens are kept in the service's database (core migration `srcore_0009`)":
    that revision of the core lineage creates the table srcore.once keeps them in."""
    from srcore.once import OnceToken

    text = " ".join(TUTORIAL.read_text(encoding="utf-8").split())
    named = re.findall(r"core migration `(srcore_\d{4})`", text)
    assert named == ["srcore_0009"]
    (script,) = (REPO / "migrations_base" / "versions").glob(f"{named[0]}_*.py")
    source = script.read_text(encoding="utf-8")
    assert f'revision: str = "{named[0]}"' in source
    assert f'TABLE = "{OnceToken.__tablename__}"' in source and "op.create_table(" in source
