"""A ``metrics-path`` one of the service's own routes also answers is refused.

The router answers a path with one of the rules matching it: metrics at ``/create`` took
todo's form over, metrics at ``/login`` were hidden by the login page, and a placeholder
(``/p/<short_id>``) took any path under it. Nothing was said. Building the app, as
``srcore serve`` and ``srcore config check`` do, now refuses it naming the key, its line
and the route, whichever of the two is added first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srcore.config import ConfigError
from srcore.testing import write_config
from tests.conftest import run_config_check

SCRAPER = {"REMOTE_ADDR": "127.0.0.1"}


def config(tmp_path: Path, metrics_path: str) -> Path:
    return write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=f"metrics-path = {metrics_path}\n",
    )


def build(path: Path) -> Any:
    import sample_service

    return sample_service.create_app(config=path)


def only_problem(info: pytest.ExceptionInfo[ConfigError]) -> Any:
    (problem,) = info.value.errors
    return problem


@pytest.mark.parametrize(
    ("metrics_path", "route"),
    [("/form", "/form (pages.form)"), ("/login", "/login (srcore_login)")],
)
def test_a_metrics_path_that_is_a_page_is_refused_at_build(
    tmp_path: Path, metrics_path: str, route: str
) -> None:
    path = config(tmp_path, metrics_path)
    with pytest.raises(ConfigError) as info:
        build(path)
    problem = only_problem(info)
    assert (problem.section, problem.key) == ("sample", "metrics-path")
    assert problem.line == path.read_text().splitlines().index(f"metrics-path = {metrics_path}") + 1
    assert f"{metrics_path!r} is also answered by the route {route}" in problem.message


def test_a_route_added_later_whose_placeholder_takes_the_path_is_refused(tmp_path: Path) -> None:
    """The service adds its routes after srcore's: the one added then is refused too."""
    app = build(config(tmp_path, "/reset/metrics"))
    with pytest.raises(ConfigError) as info:

        @app.get("/reset/<token>")
        def reset(token: str) -> str:
            return "reset page"

    assert "the route /reset/<token> (reset)" in only_problem(info).message
    assert "reset" not in app.view_functions  # nothing half added
    assert app.test_client().get("/reset/metrics", environ_base=SCRAPER).status_code == 200


@pytest.mark.parametrize("route", ["/metrics/", "/internal/<name>", "/<a>/<b>"])
def test_a_slash_redirect_or_a_placeholder_also_collides(tmp_path: Path, route: str) -> None:
    app = build(config(tmp_path, "/metrics" if route == "/metrics/" else "/internal/metrics"))
    with pytest.raises(ConfigError):
        app.add_url_rule(route, endpoint="late", view_func=lambda **kw: "late")


def test_a_path_no_route_matches_serves_the_metrics_and_routes_go_on(tmp_path: Path) -> None:
    app = build(config(tmp_path, "/internal/metrics"))
    app.add_url_rule("/internal/<int(max=9):n>", endpoint="digit", view_func=lambda n: "digit")
    app.add_url_rule("/internal/metrics/more", endpoint="more", view_func=lambda: "more")
    client = app.test_client()
    assert (
        b"srcore_http_requests_total" in client.get("/internal/metrics", environ_base=SCRAPER).data
    )
    assert client.get("/internal/metrics/more").data == b"more"
    assert client.get("/form").status_code == 200


NETWORK = f"""\
[meta]
origin = http://127.0.0.1:5000
database-url = sqlite:///meta.db
secret-key = {"m" * 40}

[todo]
origin = http://127.0.0.1:5001
database-url = sqlite:///todo.db
secret-key = {"t" * 40}
oauth-client-id = todo
oauth-client-secret = hush-todo
metrics-path = /create

[paste]
origin = http://127.0.0.1:5002
database-url = sqlite:///paste.db
secret-key = {"p" * 40}
oauth-client-id = paste
oauth-client-secret = hush-paste
metrics-path = /p/metrics
"""


def test_config_check_names_the_key_and_the_route_of_each_service(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(NETWORK, encoding="utf-8")
    status, output = run_config_check(path)
    assert status == 1, output
    assert (
        f"{path}:12 [todo] metrics-path: '/create' is also answered by the route /create"
        " (todo.create_tracker)"
    ) in output
    assert (
        f"{path}:20 [paste] metrics-path: '/p/metrics' is also answered by the route"
        " /p/<short_id> (paste.show)"
    ) in output
    assert "Traceback" not in output
    path.write_text(NETWORK.replace("/create", "/metrics").replace("/p/metrics", "/metrics"))
    assert run_config_check(path) == (0, f"OK: 3 services (meta, todo, paste) in {path}\n")
