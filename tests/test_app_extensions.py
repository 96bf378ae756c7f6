"""The features as extension objects: each keeps its state in its own extensions entry.

``app.extensions["srcore"]`` is the service's app-wide state; auth keeps its login
backend, token verifier and link to meta in ``"srcore.auth"``, metrics its registry in
``"srcore.metrics"``; the factory composes them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import srcore
from srcore.auth.state import AuthState, auth_state
from srcore.auth.web import NoAccountService
from srcore.mail import LogTransport, Mailer, MailExtension, mailer
from srcore.metrics import Metrics, MetricsExtension
from srcore.service import SrcoreState
from srcore.testing import write_config


def build(tmp_path: Path, extra: str = "", **kw: Any) -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=extra,
    )
    return sample_service.create_app(config=path, **kw)


def test_each_feature_keeps_its_state_in_its_own_entry(tmp_path: Path) -> None:
    app = build(tmp_path, "metrics-path = /internal/metrics\n")
    auth = app.extensions["srcore.auth"]
    assert isinstance(auth, AuthState)
    assert auth is auth_state(app)
    assert isinstance(auth.login, NoAccountService)  # no [meta] in this network
    assert auth.identity is None
    assert auth.token_verifier is None
    assert isinstance(app.extensions["srcore.metrics"], Metrics)


def test_the_app_wide_state_holds_no_feature_field() -> None:
    fields = {f.name for f in dataclasses.fields(SrcoreState)}
    assert not fields & {"login", "token_verifier", "identity", "metrics"}


def test_the_old_names_read_and_write_the_features_entries(tmp_path: Path) -> None:
    verifier, other = object(), object()
    app = build(tmp_path, "metrics-path = /metrics\n", token_verifier=verifier)
    st = srcore.state(app)
    assert st.token_verifier is verifier is auth_state(app).token_verifier
    assert st.login is auth_state(app).login
    assert st.metrics is app.extensions["srcore.metrics"]
    st.token_verifier = other
    assert auth_state(app).token_verifier is other


def test_metrics_without_a_path_add_nothing(tmp_path: Path) -> None:
    app = build(tmp_path)
    assert "srcore.metrics" not in app.extensions
    assert srcore.state(app).metrics is None
    assert MetricsExtension().init_app(app) is None
    assert isinstance(MetricsExtension(path="/m").init_app(app), Metrics)
    assert app.test_client().get("/m").status_code == 200


def test_mail_is_built_on_first_use_unless_one_is_given(tmp_path: Path) -> None:
    app = build(tmp_path)
    assert "srcore_mail" not in app.extensions
    given = Mailer(LogTransport(), sender="robot@example.invalid")
    MailExtension(given).init_app(app)
    assert mailer(app) is given
    (tmp_path / "other").mkdir()
    other = build(tmp_path / "other")
    built = mailer(other)
    assert built is other.extensions["srcore_mail"] is not given
