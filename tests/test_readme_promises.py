"""What README.md tells a service author, held to the code: its snippets run against the
API they show, the names it uses exist, and what it says they do, they do."""

from __future__ import annotations

import importlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from srcore.config import ConfigError, load_config
from srcore.manifest import ManifestError, parse_manifest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def _block(language: str, first_line: str) -> str:
    (found,) = [b for b in _blocks(language) if b.startswith(first_line)]
    return found


def test_the_manifest_snippet_is_a_valid_manifest() -> None:
    """The README's todo/service.yaml, as shown, is read by srcore as described."""
    data = yaml.safe_load(_block("yaml", "# todo/service.yaml"))
    manifest = parse_manifest(data, package="todo", source="README.md")
    (key,) = manifest.config["todo"]
    assert (key.name, key.type, key.default) == ("tickets-per-page", "int", 25)
    (event,) = manifest.events
    assert (event.name, event.audience) == ("ticket:created", "readers")


def test_the_models_snippet_runs_against_srcore_db() -> None:
    """todo/models.py as the README shows it: a declarative base on srcore's metadata and
    type map, and a User whose columns come from UserMixin."""
    namespace: dict[str, Any] = {"__name__": "readme_models"}
    exec(compile(_block("python", "# todo/models.py"), "README.md", "exec"), namespace)
    user = namespace["User"]
    assert user.__tablename__ == "user"
    assert {"id", "username"} <= set(user.__table__.columns.keys())


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("srcore", ["create_app", "Validation", "login_required", "oauth", "current_user"]),
        ("srcore.db", ["session", "UserMixin", "make_metadata", "TYPE_ANNOTATION_MAP"]),
        ("srcore.webhooks", ["emit", "verify", "WebhookVerificationError"]),
        ("srcore.auth", ["require_user"]),
        ("srcore.pagination", ["cursor_page", "page_number"]),
        ("srcore.settings", ["settings"]),
        ("srcore.search", ["SearchSchema", "choice", "read_search"]),
    ],
)
def test_every_name_the_readme_uses_is_public(module: str, names: list[str]) -> None:
    exported = importlib.import_module(module)
    for name in names:
        assert name in exported.__all__, f"{module}.{name}"


def test_the_retry_schedule_the_readme_quotes_is_the_default() -> None:
    """ "ten attempts over about three days by default: 0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h,
    20h, 24h" """
    from srcore.config import GLOBAL_KEYS

    text = " ".join(README.read_text(encoding="utf-8").split())
    quoted = re.search(r"by default: ((?:[0-9]+[smhd], )+[0-9]+[smhd])", text)
    assert quoted is not None
    (key,) = [k for k in GLOBAL_KEYS if k.name == "webhook-retry-schedule"]
    assert tuple(quoted.group(1).split(", ")) == key.default
    assert len(key.default) == 10  # "ten attempts"


# -- require_user -------------------------------------------------------------------------


def test_require_user_is_the_user_or_a_403_for_a_client_token(
    app: Any, user: Any, make_token: Any
) -> None:
    """ "`require_user(User)` is the view's user (403 for a token issued to a client
    alone)"; a page without a login is a 401."""
    import srcore
    from srcore.auth import require_user

    model = app.extensions["srcore"].user_model

    @app.get("/api/mine")
    @srcore.oauth("sample/things:RO")
    def mine() -> dict[str, Any]:
        return {"username": require_user(model).username}

    @app.get("/mine")
    def mine_page() -> str:
        return require_user(model).username

    client = app.test_client()
    as_user = client.get(
        "/api/mine",
        headers={"Authorization": f"Bearer {make_token('sample/things:RO', user=user)}"},
    )
    assert as_user.status_code == 200
    assert as_user.get_json() == {"username": user.username}
    as_client = client.get(
        "/api/mine", headers={"Authorization": f"Bearer {make_token('sample/things:RO')}"}
    )
    assert as_client.status_code == 403
    assert "token issued to a user" in as_client.get_json()["errors"][0]["reason"]
    assert client.get("/mine").status_code == 401


# -- a service's keys: min and max ----------------------------------------------------------


def _manifest(keys: list[dict[str, Any]]) -> Any:
    return parse_manifest({"id": "svc", "name": "Svc", "config": {"svc": keys}}, package="svc")


def test_a_key_with_min_and_max_refuses_values_outside_them(tmp_path: Path) -> None:
    """A service's own key may declare min and max (whole numbers or durations); a value
    outside them is refused at load, naming file, line, section and key."""
    manifest = _manifest(
        [
            {"name": "per-page", "type": "int", "default": 25, "min": 1, "max": 100},
            {"name": "grace", "type": "duration", "default": "1h", "min": "1m", "max": "1d"},
        ]
    )
    path = tmp_path / "config.ini"
    path.write_text(
        "[svc]\norigin = http://127.0.0.1:5000\ndatabase-url = sqlite://\n"
        f"secret-key = {'s' * 40}\nper-page = 0\ngrace = 2d\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, specs=dict(manifest.config), environ={})
    assert [str(p) for p in info.value.problems if p.severity == "error"] == [
        f"{path}:5 [svc] per-page: must be between 1 and 100, not 0",
        f"{path}:6 [svc] grace: must be between 1m and 1d, not 2d",
    ]
    path.write_text(path.read_text().replace("per-page = 0", "per-page = 100"))
    path.write_text(path.read_text().replace("grace = 2d", "grace = 1d"))
    section = load_config(path, specs=dict(manifest.config), environ={}).section("svc")
    assert (section["per-page"], section["grace"]) == (100, timedelta(days=1))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "int", "min": 1}, "give both min and max, or neither"),
        ({"type": "int", "min": 5, "max": 1}, "min is more than max"),
        ({"type": "int", "default": 0, "min": 1, "max": 9}, "default: must be between 1 and 9"),
        ({"type": "str", "min": 1, "max": 9}, "min and max are whole numbers of an int key"),
        ({"type": "int", "min": "1", "max": 9}, "min and max are whole numbers of an int key"),
        ({"type": "duration", "min": "soon", "max": "1d"}, "not a duration"),
    ],
)
def test_min_and_max_that_make_no_sense_are_the_authors_error(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        _manifest([{"name": "k", **entry}])


def test_the_key_types_the_readme_lists_are_srcores() -> None:
    """ "A key has a `type` (`str`, `int`, ...)": the list is the one parse_manifest takes."""
    from srcore.config import KEY_TYPES

    text = " ".join(README.read_text(encoding="utf-8").split())
    listed = re.search(r"A key has a `type` \(([^)]*)\)", text)
    assert listed is not None
    types = [t for t in re.findall(r"`([a-z]+)`", listed.group(1)) if t != "choices"]
    assert sorted(types) == sorted(KEY_TYPES)


def test_the_plugin_has_the_fixtures_the_readme_lists(pytestconfig: pytest.Config) -> None:
    """ "Tests get fixtures from srcore's pytest plugin (`app`, `client`, `db`, `user`,
    `user_client`, `make_token`, and `app_url` ...)"."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    listed = re.search(r"Tests get fixtures from srcore's pytest plugin \(([^)]*)\)", text)
    assert listed is not None
    names = re.findall(r"`(\w+)`", listed.group(1))
    assert names == ["app", "client", "db", "user", "user_client", "make_token", "app_url"]
    from srcore.testing import fixtures

    for name in names:
        assert callable(getattr(fixtures, name, None)), name
