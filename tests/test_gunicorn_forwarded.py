"""What a client may not set through a proxy on the server's own host: gunicorn takes
``SCRIPT_NAME`` from a header sent by 127.0.0.1 by default, and a proxy there passes on
what the client sent (Caddy does, headers with underscores and all). The client would
mount the service under a path of its choosing, one the proxy's rules do not name:
``/x/metrics`` is ``/metrics`` to the app, and every link and redirect it makes carries
the client's prefix."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from srcore.app import migration_target
from srcore.migrate import upgrade_all
from srcore.testing import free_port, run_service, write_config


def _status(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_client_cannot_set_script_name_through_a_local_proxy(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
    )
    upgrade_all(migration_target("paste", config))
    with run_service("paste", config, port=free_port()) as url:
        assert _status(url + "/healthz", {}) == 200
        # Sent from 127.0.0.1, as a proxy on this host sends what its client asked for.
        assert _status(url + "/x/healthz", {"SCRIPT_NAME": "/x"}) == 404
        assert _status(url + "/healthz", {"SCRIPT_NAME": "/x"}) == 200
