"""`make demo`'s runner: writes a config, migrates, serves every service, says where to click."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from srcore.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


def _port_block() -> int:
    while True:
        first = free_port()
        if first < 60000 and all(_free(first + i) for i in range(1, 12)):
            return first


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_demo_serves_the_network(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--var",
            str(tmp_path),
            "--first-port",
            str(_port_block()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    urls: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            match = re.match(r"^\s+(\w+)\s+(http://127\.0\.0\.1:\d+)/$", line)
            if match:
                urls[match.group(1)] = match.group(2)
            if "Ctrl-C stops everything" in line:
                break
        assert "todo" in urls, "".join(output)
        config = (tmp_path / "config.ini").read_text()
        assert "secret-key" in config
        assert (tmp_path / "config.ini").stat().st_mode & 0o077 == 0
        with urllib.request.urlopen(urls["todo"] + "/", timeout=10) as response:
            page = response.read().decode()
        assert response.status == 200
        assert "Todo" in page
        for service, url in urls.items():
            assert url + "/" in page, f"{service} is missing from todo's nav"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        process.stdout.close()
    assert process.returncode == 0, "".join(output)
