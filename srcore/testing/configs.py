"""Config files for tests: one service, or a network of them on 127.0.0.1 with SQLite."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = ["new_secret", "write_config", "write_network_config"]


def new_secret() -> str:
    """A fresh secret value, as ``srcore keygen`` prints."""
    return secrets.token_urlsafe(48)


def write_config(
    path: Path,
    *,
    service_id: str,
    database_url: str,
    origin: str = "http://127.0.0.1:5999",
    extra: str = "",
) -> Path:
    """Write a minimal development config for one service and return its path.

    Its write rate limits are off, since one test client makes hundreds of writes a second
    from one address; a test of the limits sets ``write-rate-limit`` in *extra*.
    """
    path.write_text(
        "[global]\n"
        "site-name = srcore test network\n"
        "environment = development\n"
        "write-rate-limit = off\n\n"
        f"[{service_id}]\n"
        f"origin = {origin}\n"
        f"database-url = {database_url}\n"
        f"secret-key = {secrets.token_urlsafe(48)}\n"
        f"{extra}",
        encoding="utf-8",
    )
    return path


def write_network_config(
    path: Path, ports: Mapping[str, int], *, global_keys: Mapping[str, object] | None = None
) -> Path:
    """Write a development config for a network on 127.0.0.1 and return its path.

    Each service of *ports* (``{"meta": 5000, "todo": 5001}``) gets its origin, an SQLite
    database beside *path* and a fresh secret key; every service but meta also gets OAuth
    client credentials, which meta reads from the same file. *global_keys* go into
    ``[global]`` (SMTP settings, a broker, intervals). End-to-end tests start the services
    on it with :func:`run_service` after migrating each one. Write rate limits are off
    unless *global_keys* sets ``write-rate-limit``.
    """
    keys = {"write-rate-limit": "off", **(global_keys or {})}
    lines = ["[global]", "environment = development"]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    for name, port in ports.items():
        lines += [
            "",
            f"[{name}]",
            f"origin = http://127.0.0.1:{port}",
            f"database-url = sqlite:///{path.parent / (name + '.db')}",
            f"secret-key = {secrets.token_urlsafe(40)}",
        ]
        if name != "meta":
            lines += [
                f"oauth-client-id = {name}",
                f"oauth-client-secret = {secrets.token_urlsafe(40)}",
            ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
