"""Access logs keep secrets out: reset and confirmation tokens in paths, OAuth codes and
states in query strings and referers are replaced before a line is written, in srcore's
own request log and in the gunicorn access log ``srcore serve`` configures."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import free_port, write_config

SECRETS = ("s3cr3tT0ken", "c0deXYZ", "st4te99", "v3rifier", "pa55word")


def build(tmp_path: Path) -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    app = sample_service.create_app(config=path)

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "reset page"

    @app.get("/pastes/<short_id>")
    def paste(short_id: str) -> str:
        return "a paste"

    return app


def _lines(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "srcore.access")


def test_request_log_redacts_secrets_in_paths_and_queries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = build(tmp_path)
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        client.get("/reset/s3cr3tT0ken?next=/profile")
        client.get("/oauth/callback?code=c0deXYZ&state=st4te99")
        client.get("/?code_verifier=v3rifier&password=pa55word&page=2")
        client.get("/pastes/abc123?token=s3cr3tT0ken")
    lines = _lines(caplog)
    assert not any(secret in lines for secret in SECRETS), lines
    assert "/reset/[redacted]?next=/profile" in lines
    assert "code=[redacted]&state=[redacted]" in lines
    assert "page=2" in lines
    # A path variable that is no secret stays readable.
    assert "/pastes/abc123?token=[redacted]" in lines


def test_redaction_functions() -> None:
    from srcore.redact import redact_query, redact_target, redact_url

    assert redact_query("a=1&code=x&STATE=y&b") == "a=1&code=[redacted]&STATE=[redacted]&b"
    assert redact_query("") == ""
    assert redact_target("/confirm/abc", "x=1", {"token": "abc"}) == "/confirm/[redacted]?x=1"
    assert redact_target("/u/abc", "", {"name": "abc"}) == "/u/abc"
    assert (
        redact_url("https://a.example/cb?code=c&state=s#f")
        == "https://a.example/cb?code=[redacted]&state=[redacted]#f"
    )
    assert redact_url("-") == "-"


def test_gunicorn_access_log_is_redacted(tmp_path: Path) -> None:
    """``srcore serve`` runs gunicorn with srcore's logger class: with an access log
    turned on (here through GUNICORN_CMD_ARGS), its lines are redacted too."""
    import os

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import write_network_config

    port = free_port()
    config = write_network_config(tmp_path / "config.ini", {"paste": port})
    upgrade_all(migration_target("paste", config))  # serve refuses a database not there
    env = dict(
        os.environ,
        SRCORE_CONFIG=str(config),
        GUNICORN_CMD_ARGS="--access-logfile - --access-logformat '%(r)s %(U)s %(q)s %(f)s'",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from srcore.cli import main; main()",
            "serve",
            "paste",
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a timing
        while True:
            try:
                request = urllib.request.Request(
                    base + "/oauth/callback?code=c0deXYZ&state=st4te99",
                    headers={"Referer": base + "/x?code=c0deXYZ"},
                )
                urllib.request.urlopen(request, timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=15)
    text = out.decode(errors="replace")
    assert "/oauth/callback" in text, text[-2000:]
    assert not any(secret in text for secret in SECRETS), text[-2000:]
    assert "code=[redacted]&state=[redacted]" in text


def test_development_server_log_is_redacted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``srcore serve --debug`` (and so ``srcore dev``) runs Werkzeug's server, which logs
    every request line: with srcore's request handler, redacted."""
    import threading

    from werkzeug.serving import make_server

    from srcore.redact import dev_request_handler

    app = build(tmp_path)
    port = free_port()
    server = make_server("127.0.0.1", port, app, request_handler=dev_request_handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            for path in ("/reset/s3cr3tT0ken?x=1", "/oauth/callback?code=c0deXYZ&state=st4te99"):
                with contextlib.suppress(urllib.error.HTTPError):
                    urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
    finally:
        server.shutdown()
        thread.join(timeout=5)
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "werkzeug")
    assert "/reset/[redacted]?x=1" in lines, lines
    assert "code=[redacted]&state=[redacted]" in lines, lines
    assert not any(secret in lines for secret in SECRETS), lines


def test_serve_debug_uses_the_redacting_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from srcore.app import SrcoreApp
    from srcore.cli import cli
    from srcore.testing import write_network_config

    seen: dict[str, Any] = {}
    monkeypatch.setattr(SrcoreApp, "run", lambda self, **kw: seen.update(kw))
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_network_config(tmp_path / "config.ini", {"paste": free_port()})
    upgrade_all(migration_target("paste", config))  # serve refuses a database not there
    result = CliRunner().invoke(cli, ["--config", str(config), "serve", "paste", "--debug"])
    assert result.exit_code == 0, result.output
    from srcore.redact import dev_request_handler

    assert seen["request_handler"] is dev_request_handler()
