"""``proxy-fix-trusted-hops`` is bounded: ``11`` typed for ``1`` is refused.

Each hop believed is an ``X-Forwarded-For`` entry taken as the client's address; behind one
proxy, a service believing eleven took the entry the client wrote ten places before the
proxy's own, so any client chose the address its rate limits and audit rows counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srcore.config import ConfigError, load_config
from srcore.testing import write_config

REAL = "198.51.100.7"
FORGED = "203.0.113.66"
#: The bound the reference states.
MAX_TRUSTED_HOPS = 5


def config(tmp_path: Path, hops: int) -> Path:
    return write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=f"proxy-fix-trusted-hops = {hops}\n",
    )


def seen_address(path: Path, forwarded_for: str) -> str:
    import sample_service

    app: Any = sample_service.create_app(config=path)

    @app.get("/address-probe")
    def probe() -> str:
        from flask import request

        return str(request.remote_addr)

    client = app.test_client()
    headers = {"X-Forwarded-For": forwarded_for}
    response = client.get(
        "/address-probe", headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    return response.get_data(as_text=True)


@pytest.mark.parametrize("hops", [MAX_TRUSTED_HOPS + 1, 11, 100])
def test_more_hops_than_any_deployment_has_is_refused(tmp_path: Path, hops: int) -> None:
    path = config(tmp_path, hops)
    with pytest.raises(ConfigError) as info:
        load_config(path, specs={}, environ={})
    (problem,) = info.value.errors
    assert (problem.section, problem.key) == ("sample", "proxy-fix-trusted-hops")
    assert (
        problem.line == path.read_text().splitlines().index(f"proxy-fix-trusted-hops = {hops}") + 1
    )
    assert problem.message.startswith(f"must be at most {MAX_TRUSTED_HOPS}, not {hops}: ")
    assert "forge its address" in problem.message


def test_from_the_environment_too(tmp_path: Path) -> None:
    path = config(tmp_path, 1)
    environ = {"SRCORE__SAMPLE__PROXY_FIX_TRUSTED_HOPS": "11"}
    with pytest.raises(ConfigError) as info:
        load_config(path, specs={}, environ=environ)
    assert [p.key for p in info.value.errors] == ["proxy-fix-trusted-hops"]


def test_the_client_cannot_write_the_address_within_the_bound(tmp_path: Path) -> None:
    """At the bound, behind as many proxies, the address is the one the first proxy saw,
    whatever the client wrote before it; one proxy believed as one hop, the same."""
    proxies = [f"192.0.2.{n}" for n in range(1, MAX_TRUSTED_HOPS)]
    chain = ", ".join([FORGED] * 10 + [REAL, *proxies])
    assert seen_address(config(tmp_path, MAX_TRUSTED_HOPS), chain) == REAL
    (tmp_path / "one").mkdir()
    assert seen_address(config(tmp_path / "one", 1), f"{FORGED}, {REAL}") == REAL


def test_the_reference_states_the_bound() -> None:
    reference = (Path(__file__).resolve().parents[1] / "docs" / "config-reference.md").read_text()
    section = reference.split("### `proxy-fix-trusted-hops`", 1)[1].split("###", 1)[0]
    assert f"At most {MAX_TRUSTED_HOPS}:" in section
    assert "one more than there are, and every client can forge its address" in section
