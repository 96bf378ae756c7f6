"""srcore's per-request work runs in one before-request and one after-request function.

Flask pays for every hook on every request (a lookup, a coroutine check, a call through
``ensure_sync``), whatever the hook then does: a feature that registers a hook of its own
instead of a step of :mod:`srcore.lifecycle` makes every request of every service dearer.
These tests count the hooks of built service apps, which is independent of the Python and
Flask versions, rather than calls or times.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from srcore import cors, headers, lifecycle
from srcore.testing import write_config
from srcore.testing.configs import write_network_config

#: The app-wide hooks a service app gets from srcore's factory beside lifecycle's own,
#: each registered by a module that is not a step of lifecycle's (yet). The list may
#: shrink; a new entry makes every request pay for one more hook.
OTHER_BEFORE = {
    # The database's guard against writes on safe methods (srcore.db), first of all.
    "srcore.db._mark_dispatching",
    # Flask-WTF's own check, inert: srcore checks CSRF in lifecycle's hook.
    "flask_wtf.csrf.CSRFProtect.init_app.<locals>.csrf_protect",
    # Starts the revocation threads, when the service logs in through meta.
    "srcore.auth.revocation.extension.Revocations.init_app.<locals>.start_revocations",
}
OTHER_AFTER = {"srcore.auth.api._challenge_every_401"}
LIFECYCLE_BEFORE = "srcore.lifecycle.init_app.<locals>.before"
LIFECYCLE_AFTER = "srcore.lifecycle.init_app.<locals>.after"


def _names(functions: Iterable[Any]) -> list[str]:
    """Each function's module and qualified name (a partial's: its function's)."""
    unwrapped = (getattr(f, "func", f) for f in functions)
    return [f"{f.__module__}.{f.__qualname__}" for f in unwrapped]


def _srcore_hooks(app: Any) -> tuple[list[str], list[str]]:
    """The app-wide before and after hooks registered by srcore (or by a library srcore's
    factory sets up), leaving out those a service registers itself."""

    def ours(name: str) -> bool:
        return name.startswith(("srcore.", "flask_wtf."))

    before = [n for n in _names(app.before_request_funcs.get(None, [])) if ours(n)]
    after = [n for n in _names(app.after_request_funcs.get(None, [])) if ours(n)]
    return before, after


def _sample(tmp_path: Path) -> Any:
    import sample_service

    config = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        # Every feature that has a per-request part switched on.
        extra="metrics-path = /internal/metrics\nwrite-rate-limit = 100/minute\n",
    )
    return sample_service.create_app(config=config)


def _networked(tmp_path: Path, service: str) -> Any:
    """A service of a network with meta: it logs in through meta (revocations on)."""
    import importlib

    config = write_network_config(
        tmp_path / "network.ini", {"meta": 5990, "todo": 5991, "paste": 5992}
    )
    return importlib.import_module(service).create_app(config=config)


@pytest.mark.parametrize("service", ["sample", "todo", "paste", "meta"])
def test_srcore_runs_one_before_and_one_after_hook(tmp_path: Path, service: str) -> None:
    app = _sample(tmp_path) if service == "sample" else _networked(tmp_path, service)
    before, after = _srcore_hooks(app)
    assert before.count(LIFECYCLE_BEFORE) == 1, before
    assert after.count(LIFECYCLE_AFTER) == 1, after
    assert set(before) - {LIFECYCLE_BEFORE} <= OTHER_BEFORE, before
    assert set(after) - {LIFECYCLE_AFTER} <= OTHER_AFTER, after
    assert len(before) <= 1 + len(OTHER_BEFORE) and len(after) <= 1 + len(OTHER_AFTER)
    # No blueprint of srcore's adds app-wide work behind the app's back either.
    for name, funcs in app.after_request_funcs.items():
        assert name is None or not any(n.startswith("srcore.") for n in _names(funcs)), name


def test_the_features_run_as_steps_of_the_one_hook(tmp_path: Path) -> None:
    """Headers, CORS and the write rate limit are steps, in the documented order."""
    app = _sample(tmp_path)
    # The sibling modules leave their steps where lifecycle's after-request reads them.
    assert headers.STEP_KEY == lifecycle.HEADERS_STEP
    assert cors.STEP_KEY == lifecycle.CORS_STEP
    assert callable(app.extensions[lifecycle.HEADERS_STEP])
    assert callable(app.extensions[lifecycle.CORS_STEP])
    # A CORS preflight is answered before anything else a service adds; the rate limit is
    # the last before step (a write is counted once it passed every check).
    assert _names(lifecycle.before_steps(app)) == [
        "srcore.cors.answer_preflight",
        "srcore.ratelimit.init_app.<locals>.count_writes",
    ]


def test_a_step_answering_ends_the_request_before_the_view(tmp_path: Path) -> None:
    """A before step's response is the answer (as a before-request function's is), and
    the after-request function still gives it srcore's headers."""
    from flask import Response

    app = _sample(tmp_path)
    seen: list[str] = []

    def refuse(request: Any) -> Response | None:
        seen.append(request.path)
        return Response("no", status=418) if request.path == "/healthz" else None

    lifecycle.add_before(app, refuse)
    response = app.test_client().get("/healthz")
    assert response.status_code == 418
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Request-Id"]
    assert seen == ["/healthz"]
