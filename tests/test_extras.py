"""A config that asks for a part srcore installs as an extra, when the extra is missing,
gets one error naming the extra to install, not ``No module named ...`` from deep inside.

Each test hides the extra's module (``sys.modules[name] = None`` makes its import fail as
an uninstalled one does).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from srcore import extras
from srcore.auth import revocation
from srcore.db import Database
from srcore.extras import MissingExtraError
from srcore.testdb import postgres_available
from srcore.testing import write_config
from srcore.throttle import make_store as throttle_store
from srcore.webhooks import build_dispatcher


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, module, None)


def says_install(error: pytest.ExceptionInfo[MissingExtraError], extra: str) -> None:
    assert error.value.extra == extra
    assert f"pip install 'srcore[{extra}]'" in str(error.value)


def test_installed_sees_each_extra_and_a_hidden_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(extras.installed(extra) for extra in extras.EXTRAS)  # srcore's own suite
    hide(monkeypatch, "redis")
    assert not extras.installed("redis")
    assert not extras.installed("celery")  # its wake-up marks are kept in Redis
    assert extras.installed("postgres")
    with pytest.raises(MissingExtraError) as error:
        extras.require("redis", "this test")
    says_install(error, "redis")
    assert str(error.value).startswith("this test needs srcore's 'redis' extra")


@pytest.mark.parametrize(
    "make",
    [
        lambda: revocation.make_fanout("redis://127.0.0.1:6379/0", "todo", revocation.make_store()),
        lambda: revocation.make_seen_messages("redis://127.0.0.1:6379/0", "todo"),
        lambda: throttle_store("redis://127.0.0.1:6379/0"),
    ],
    ids=["revocations", "replay-marks", "throttle"],
)
def test_a_redis_url_without_redis_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    hide(monkeypatch, "redis")
    with pytest.raises(MissingExtraError) as error:
        make()
    says_install(error, "redis")
    assert "redis-url" in str(error.value)


def test_without_a_redis_url_nothing_needs_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "redis")
    assert revocation.make_fanout(None, "todo", revocation.make_store()) is None
    assert isinstance(revocation.make_seen_messages(None, "todo"), revocation.MemorySeenMessages)
    assert throttle_store("") is not None


def _app_with_broker(broker: str) -> Any:
    config = SimpleNamespace(global_={"webhooks-broker": broker})
    return SimpleNamespace(extensions={"srcore": SimpleNamespace(config=config)})


def test_a_broker_without_celery_is_refused_when_the_app_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide(monkeypatch, "celery")
    with pytest.raises(MissingExtraError) as error:
        build_dispatcher(_app_with_broker("redis://127.0.0.1:6379/0"))
    says_install(error, "celery")
    assert "webhooks-broker" in str(error.value)
    # No broker: the local worker, which needs nothing more.
    assert type(build_dispatcher(_app_with_broker(""))).__name__ == "LocalDispatcher"


def test_the_celery_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from srcore.webhooks.celery import make_celery

    hide(monkeypatch, "celery")
    with pytest.raises(MissingExtraError) as error:
        make_celery(_app_with_broker("redis://127.0.0.1:6379/0"))
    says_install(error, "celery")


def test_a_postgresql_url_without_psycopg_names_the_extra_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide(monkeypatch, "psycopg")
    for url in ("postgresql://app:s3cret@127.0.0.1/todo", "postgresql+psycopg://app:s3cret@h/t"):
        with pytest.raises(MissingExtraError) as error:
            Database(url)
        says_install(error, "postgres")
        assert "s3cret" not in str(error.value) and "***" in str(error.value)
    assert postgres_available() is False  # the test suites skip PostgreSQL runs then
    Database("sqlite://").dispose()


def test_migrating_a_postgresql_database_without_psycopg_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sqlalchemy import MetaData

    from srcore import migrate

    hide(monkeypatch, "psycopg")
    target = migrate.MigrationTarget(
        service_id="todo",
        database_url="postgresql://app@127.0.0.1/todo",
        metadata=MetaData(),
        versions_dir=tmp_path,
    )
    with pytest.raises(MissingExtraError) as error:
        migrate.current(target)
    says_install(error, "postgres")


def test_serve_without_gunicorn_says_which_extra_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from srcore.cli import main

    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{tmp_path}/t.db"
    )
    hide(monkeypatch, "gunicorn")

    def no_exec(*args: object) -> None:
        raise AssertionError("serve went on to start gunicorn")

    monkeypatch.setattr("os.execv", no_exec)
    monkeypatch.setattr(sys, "argv", ["srcore", "--config", str(config), "serve", "todo"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "srcore serve todo (without --debug) needs srcore's 'server' extra" in err
    assert "pip install 'srcore[server]'" in err
