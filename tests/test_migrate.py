from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import ForeignKey, MetaData, String, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from srcore import migrate
from srcore.db import TYPE_ANNOTATION_MAP, UserMixin, make_metadata
from srcore.migrate import CORE_LINEAGE, MigrationTarget, core_metadata
from srcore.migrate_cli import migrate_command

CORE_HEAD = "srcore_0010"


def service_a_metadata(*, extra: bool = False) -> MetaData:
    """Service "a": its own user columns plus a widget table; ``extra`` is its next change."""

    class Base(DeclarativeBase):
        metadata = make_metadata()
        type_annotation_map = TYPE_ANNOTATION_MAP

    class User(UserMixin, Base):
        __tablename__ = "user"
        theme: Mapped[str | None] = mapped_column(String(20))

    class Widget(Base):
        __tablename__ = "widget"
        id: Mapped[int] = mapped_column(primary_key=True)
        owner_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
        name: Mapped[str] = mapped_column(String(50), unique=True)

    if extra:

        class Sprocket(Base):
            __tablename__ = "sprocket"
            id: Mapped[int] = mapped_column(primary_key=True)
            widget_id: Mapped[int] = mapped_column(ForeignKey("widget.id"))

    return Base.metadata


def service_b_metadata() -> MetaData:
    """Service "b": no user model of its own, one table."""

    class Base(DeclarativeBase):
        metadata = make_metadata()
        type_annotation_map = TYPE_ANNOTATION_MAP

    class Gadget(Base):
        __tablename__ = "gadget"
        id: Mapped[int] = mapped_column(primary_key=True)
        label: Mapped[str] = mapped_column(String(50), index=True)

    return Base.metadata


def target(service_id: str, url: str, metadata: MetaData, tmp_path: Path) -> MigrationTarget:
    versions = tmp_path / service_id / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    return MigrationTarget(service_id, url, metadata, versions)


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def summary(changes: list[object]) -> set[tuple[str, ...]]:
    """Autogenerate diffs as (kind, table, name) tuples."""
    out: set[tuple[str, ...]] = set()
    for change in changes:
        if isinstance(change, list):
            out |= summary(change)
            continue
        assert isinstance(change, tuple)
        kind = change[0]
        if kind in ("add_table", "remove_table"):
            out.add((kind, change[1].name))
        elif kind in ("add_column", "remove_column"):
            out.add((kind, change[2], change[3].name))
        elif kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
            out.add((kind, change[1].table.name, change[1].name))
        else:
            out.add((kind, *map(str, change[1:4])))
    return out


def script_text(path: Path) -> str:
    """A written script, in Alembic's own layout whether or not ruff formatted it (when
    ruff is installed, srcore has it fix and format each script it writes)."""
    import re

    text = path.read_text()
    compile(text, str(path), "exec")
    text = re.sub(r"([(\[])\s+", r"\1", text).replace('"', "'")
    return re.sub(r",\s+([)\]])", r"\1", text)


def upgrade_text(path: Path) -> str:
    return script_text(path).split("def upgrade()")[1].split("def downgrade()")[0]


CORE_COLUMNS = ("username", "email", "user_type", "suspension_notice", "created")


def test_version_table_names() -> None:
    assert migrate.version_table("todo") == "alembic_version_todo"
    assert migrate.version_table("lists-extra") == "alembic_version_lists_extra"


def test_target_checks_service_id(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="core's lineage"):
        MigrationTarget("srcore", "sqlite://", MetaData(), tmp_path)
    with pytest.raises(ValueError, match="service id"):
        MigrationTarget("Bad Name", "sqlite://", MetaData(), tmp_path)


def test_core_lineage_matches_user_mixin(database_url: str, tmp_path: Path) -> None:
    t = target("a", database_url, service_a_metadata(), tmp_path)
    migrate.upgrade(t, lineage=CORE_LINEAGE)
    assert tables(database_url) == {"alembic_version_srcore", *core_metadata().tables}
    assert migrate.pending_changes(t, lineage=CORE_LINEAGE) == []
    assert columns(database_url, "user") == {c.name for c in core_metadata().tables["user"].columns}


def test_service_lineage_full_cycle(database_url: str, tmp_path: Path) -> None:
    t = target("a", database_url, service_a_metadata(), tmp_path)
    if database_url.startswith("sqlite"):
        with pytest.raises(migrate.DatabaseMissing, match="does not exist"):
            migrate.current(t)  # reading creates no SQLite file; upgrade does
    else:
        assert migrate.current(t) == {"srcore": None, "a": None}

    migrate.upgrade(t)  # core only: the service has no scripts yet
    assert migrate.current(t) == {"srcore": CORE_HEAD, "a": None}

    assert summary(migrate.pending_changes(t)) == {
        ("add_table", "widget"),
        ("add_index", "widget", "ix_widget_owner_id"),
        ("add_column", "user", "theme"),
    }
    path = migrate.revision(t, "widgets and user themes")
    assert path.parent == t.versions_dir
    body = upgrade_text(path)
    assert "create_table('widget'" in body
    assert "sa.Column('theme'" in body
    assert "'user'" not in body.replace("add_column('user'", "").replace(
        "batch_alter_table('user'", ""
    ).replace("['user.id']", "")
    assert not [name for name in CORE_COLUMNS if f"'{name}'" in body]

    migrate.upgrade(t)
    rev_a = path.name.split("_")[0]
    assert migrate.current(t) == {"srcore": CORE_HEAD, "a": rev_a}
    assert migrate.heads(t) == {"srcore": CORE_HEAD, "a": rev_a}
    assert "theme" in columns(database_url, "user")
    assert migrate.pending_changes(t) == []
    assert migrate.pending_changes(t, lineage=CORE_LINEAGE) == []

    history = migrate.history(t)
    assert [(h.lineage, h.revision, h.down_revision) for h in history] == [
        ("srcore", "srcore_0001", ()),
        ("srcore", "srcore_0002", ("srcore_0001",)),
        ("srcore", "srcore_0003", ("srcore_0002",)),
        ("srcore", "srcore_0004", ("srcore_0003",)),
        ("srcore", "srcore_0005", ("srcore_0004",)),
        ("srcore", "srcore_0006", ("srcore_0005",)),
        ("srcore", "srcore_0007", ("srcore_0006",)),
        ("srcore", "srcore_0008", ("srcore_0007",)),
        ("srcore", "srcore_0009", ("srcore_0008",)),
        ("srcore", CORE_HEAD, ("srcore_0009",)),
        ("a", rev_a, ()),
    ]
    assert history[-1].message == "widgets and user themes"
    assert [h.is_head for h in history] == [False] * 9 + [True, True]

    migrate.downgrade(t, "base")
    assert migrate.current(t) == {"srcore": CORE_HEAD, "a": None}
    assert "widget" not in tables(database_url)
    assert "theme" not in columns(database_url, "user")
    assert columns(database_url, "user") == {c.name for c in core_metadata().tables["user"].columns}
    assert migrate.pending_changes(t, lineage=CORE_LINEAGE) == []

    migrate.downgrade(t, "base", lineage=CORE_LINEAGE)
    assert migrate.current(t) == {"srcore": None, "a": None}
    assert "user" not in tables(database_url)


def test_lineages_do_not_see_each_other(database_url: str, tmp_path: Path) -> None:
    a = target("a", database_url, service_a_metadata(), tmp_path)
    b = target("b", database_url, service_b_metadata(), tmp_path)
    migrate.upgrade(a)
    migrate.revision(a, "initial")
    migrate.upgrade(a)
    assert summary(migrate.pending_changes(b)) == {
        ("add_table", "gadget"),
        ("add_index", "gadget", "ix_gadget_label"),
    }
    body = upgrade_text(migrate.revision(b, "initial"))
    assert "'gadget'" in body
    assert "'user'" not in body
    assert "'widget'" not in body
    migrate.upgrade_all(b)

    assert {
        "alembic_version_srcore",
        "alembic_version_a",
        "alembic_version_b",
    } <= tables(database_url)
    assert migrate.current(a)["a"] != migrate.current(b)["b"]

    # Everyone is in sync with their own lineage, whatever else is in the database.
    assert migrate.pending_changes(a) == []
    assert migrate.pending_changes(b) == []
    assert migrate.pending_changes(b, lineage=CORE_LINEAGE) == []

    # Service a changes: its next script holds that change and nothing of b's or core's.
    a2 = target("a", database_url, service_a_metadata(extra=True), tmp_path)
    assert summary(migrate.pending_changes(a2)) == {("add_table", "sprocket")}
    body = upgrade_text(migrate.revision(a2, "sprockets"))
    assert "create_table('sprocket'" in body
    for other in ("'user'", "'widget'", "'gadget'", "alembic_version"):
        assert other not in body.replace("['widget.id']", "")
    migrate.upgrade(a2)
    assert migrate.pending_changes(b) == []

    # Downgrading b leaves a and the core alone.
    migrate.downgrade(b, "base")
    assert {"user", "widget", "sprocket"} <= tables(database_url)
    assert "gadget" not in tables(database_url)


def test_empty_revision_needs_no_database(tmp_path: Path) -> None:
    t = target("a", "sqlite:////nonexistent/dir/x.db", service_a_metadata(), tmp_path)
    first = migrate.revision(t, "by hand", autogenerate=False)
    second = migrate.revision(t, "again", autogenerate=False)
    text = script_text(second)
    assert f"down_revision: str | Sequence[str] | None = '{first.name.split('_')[0]}'" in text
    assert "def upgrade() -> None:\n    pass" in text


def test_missing_versions_dir_is_clear(tmp_path: Path) -> None:
    t = MigrationTarget("a", "sqlite://", MetaData(), tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        migrate.history(t)


def test_cli(database_url: str, tmp_path: Path) -> None:
    t = target("a", database_url, service_a_metadata(), tmp_path)
    seen: list[tuple[str, str | None]] = []

    def loader(service_id: str, config_path: str | None) -> MigrationTarget:
        seen.append((service_id, config_path))
        return t

    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(migrate_command, list(args), obj={"target_loader": loader})
        assert result.exit_code == 0, result.output
        return result.output

    if not database_url.startswith("sqlite"):  # an SQLite file is made by upgrade
        assert "srcore: (none)" in run("a", "current")
    out = run("--config", "x.ini", "a", "upgrade")
    assert f"srcore: {CORE_HEAD} (head)" in out
    assert seen[-1] == ("a", "x.ini")

    out = run("a", "revision", "-m", "first cut")
    assert "wrote" in out
    assert str(t.versions_dir) in out
    run("a", "revision", "--empty", "-m", "by hand")
    out = run("a", "upgrade")
    assert re.search(r"^a: \w+ \(head\)$", out, re.M)

    out = run("a", "history")
    lines = out.splitlines()
    assert lines[0].startswith("srcore: <base> -> srcore_0001")
    assert lines[1].startswith("srcore: srcore_0001 -> srcore_0002, ")
    assert lines[2].startswith("srcore: srcore_0002 -> srcore_0003, ")
    assert lines[3].startswith("srcore: srcore_0003 -> srcore_0004, ")
    assert lines[4].startswith("srcore: srcore_0004 -> srcore_0005, ")
    assert lines[5].startswith("srcore: srcore_0005 -> srcore_0006, ")
    assert lines[6].startswith("srcore: srcore_0006 -> srcore_0007, ")
    assert lines[7].startswith("srcore: srcore_0007 -> srcore_0008, ")
    assert lines[8].startswith("srcore: srcore_0008 -> srcore_0009, ")
    assert lines[9].startswith(f"srcore: srcore_0009 -> {CORE_HEAD} (head, current)")
    assert "first cut" in lines[10]
    assert lines[11].endswith("by hand")
    assert "(head, current)" in lines[11]

    run("a", "downgrade", "base")
    assert "a: (none)" in run("a", "current")

    result = runner.invoke(migrate_command, ["a", "upgrade", "nope"], obj={"target_loader": loader})
    assert result.exit_code == 1
    assert "nope" in result.output


def test_cli_help_needs_no_target() -> None:
    result = CliRunner().invoke(migrate_command, ["a", "upgrade", "--help"])
    assert result.exit_code == 0
    assert "REVISION" in result.output


def test_cli_loader_errors_are_clean() -> None:
    def loader(service_id: str, config_path: str | None) -> MigrationTarget:
        raise ValueError(f"no installed service is called {service_id!r}")

    result = CliRunner().invoke(migrate_command, ["zzz", "current"], obj={"target_loader": loader})
    assert result.exit_code == 1
    assert "no installed service is called 'zzz'" in result.output
    assert "Traceback" not in result.output


def test_cli_all_upgrades_each_service_with_progress_and_a_summary(tmp_path: Path) -> None:
    targets = {
        name: target(name, f"sqlite:///{tmp_path / (name + '.db')}", metadata, tmp_path)
        for name, metadata in (("a", service_a_metadata()), ("b", service_b_metadata()))
    }
    migrate.revision(targets["a"], "first", autogenerate=False)
    migrate.revision(targets["a"], "second", autogenerate=False)
    migrate.revision(targets["b"], "first", autogenerate=False)

    def loader(service_id: str, config_path: str | None) -> MigrationTarget:
        return targets[service_id]

    def run() -> str:
        obj = {"target_loader": loader, "services": ["b", "a"]}
        result = CliRunner().invoke(migrate_command, ["--all", "upgrade"], obj=obj)
        assert result.exit_code == 0, result.output
        return result.output

    out = run()
    # The services in the order given, the core's nine scripts in each database.
    assert re.search(r"^\[1/2\] b: upgrading \.\.\. done in [0-9.]+ s \(11 revisions\)$", out, re.M)
    assert re.search(r"^\[2/2\] a: upgrading \.\.\. done in [0-9.]+ s \(12 revisions\)$", out, re.M)
    assert re.search(r"^migrated 2 services \(23 revisions applied\) in [0-9.]+ s$", out, re.M)
    assert out.index("[1/2] b") < out.index("[2/2] a") < out.index("migrated 2 services")

    migrate.revision(targets["b"], "third", autogenerate=False)
    out = run()
    assert re.search(r"^\[1/2\] b: .* \(1 revision\)$", out, re.M)
    assert re.search(r"^\[2/2\] a: .* \(up to date\)$", out, re.M)
    assert re.search(r"^migrated 2 services \(1 revision applied\) in ", out, re.M)
    for t in targets.values():
        assert migrate.current(t) == migrate.heads(t)


def test_service_subscriptions_keep_their_client_across_srcore_0007(
    database_url: str, tmp_path: Path
) -> None:
    """Before srcore_0007 a subscription named no client: a service subscriber's (no user)
    moves to its client, so its tokens still see it; a user's to any client of the user."""
    from sqlalchemy import text

    t = target("b", database_url, service_b_metadata(), tmp_path)
    migrate.upgrade(t, "srcore_0006", lineage=CORE_LINEAGE)
    engine = create_engine(database_url)
    try:
        with engine.begin() as db:
            db.execute(
                text(
                    "INSERT INTO srcore_webhook_subscription (owner_id, owner_client, url, events,"
                    " scopes, secret, enabled, trusted, created, updated) VALUES"
                    " (NULL, 'builds', 'https://a.example/', 'x:y', '', 's', true, false,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),"
                    " (7, NULL, 'https://b.example/', 'x:y', '', 's', true, false,"
                    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        migrate.upgrade(t, lineage=CORE_LINEAGE)
        with engine.begin() as db:
            rows = db.execute(
                text("SELECT url, client_id FROM srcore_webhook_subscription ORDER BY url")
            ).all()
        assert [tuple(row) for row in rows] == [
            ("https://a.example/", "builds"),
            ("https://b.example/", "*"),
        ]
        migrate.downgrade(t, "srcore_0006", lineage=CORE_LINEAGE)
        assert "client_id" not in columns(database_url, "srcore_webhook_subscription")
    finally:
        engine.dispose()
