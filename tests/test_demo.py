"""`make demo`'s runner: writes a config, migrates, serves every service, says where to click.

With meta installed, the printed "Start here" is followed for real: register at meta, find
the confirmation mail in the demo's own output, open its link, and log in to todo.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from srcore.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scripts" / "demo.py"
HAS_META = importlib.util.find_spec("meta") is not None
#: The start of a line one of the demo's processes printed: time, name, a bar.
_LABEL = r"[0-9:]+ [\w ]+\| "
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


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


class Output:
    """The demo's output, read line by line in a thread so no wait is unbounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def close(self) -> None:
        """After the process ended: read what is left and close the pipe."""
        self._thread.join(timeout=10)
        self._stream.close()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(
        self, pattern: str, *, timeout: float, process: subprocess.Popen[str] | None = None
    ) -> re.Match[str]:
        """The first match of *pattern*; fails after *timeout*, or once *process* ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = process is not None and process.poll() is not None
            found = re.search(pattern, self.text, re.MULTILINE)
            if found:
                return found
            if ended:
                self._thread.join(timeout=5)
                found = re.search(pattern, self.text, re.MULTILINE)
                if found:
                    return found
                raise AssertionError(f"exited with {process.returncode}:\n{self.text[-5000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not printed within {timeout} s:\n{self.text[-5000:]}")


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@dataclass
class Demo:
    """A running demo: its process, its output so far, its first port and printed URLs."""

    process: subprocess.Popen[str]
    output: Output
    first_port: int
    urls: dict[str, str]


@contextlib.contextmanager
def running_demo(var: Path) -> Iterator[Demo]:
    """``scripts/demo.py`` as ``make demo`` runs it, with its config and ports isolated.

    Yields once the demo printed its guide; afterwards sends Ctrl-C (SIGINT) and checks
    that it exits with status 0 and that nothing answers on its ports any more.
    """
    # No PYTHONUNBUFFERED here on purpose: the demo must print line by line into a pipe.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "SRCORE_CONFIG")}
    first = _port_block()
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--var", str(var), "--first-port", str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # no terminal: the demo leaves a developer's terminal alone
    )
    output = Output(process)
    try:
        output.wait_for(r"Ctrl-C stops everything", timeout=180, process=process)
        urls = dict(re.findall(r"^\s+(\w+)\s+(http://127\.0\.0\.1:\d+)/$", output.text, re.M))
        yield Demo(process, output, first, urls)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            output.close()
    assert process.returncode == 0, output.text[-5000:]
    assert re.search(r"^\S+ demo +\| stopping \(SIGINT\)", output.text, re.M), output.text[-3000:]
    for url in urls.values():
        assert _refused(url), f"{url} still answers after the demo stopped"


def _refused(url: str) -> bool:
    import socket
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.slow
def test_demo_serves_the_network(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        output, urls, first = demo.output, demo.urls, demo.first_port
        assert "todo" in urls, output.text
        printed = output.text
        config = (tmp_path / "config.ini").read_text()
        assert "secret-key" in config
        assert (tmp_path / "config.ini").stat().st_mode & 0o077 == 0

        # Set-up in numbered steps, migrations one line per service, then one summary
        # line before the guide.
        steps = re.findall(r"^demo \[(\d)/5\] ", printed, re.M)
        assert steps == ["1", "2", "3", "4", "5"], printed[:3000]
        services = list(urls)  # in the config's order, as printed
        for number, service in enumerate(services, 1):
            assert re.search(
                rf"^\[{number}/{len(services)}\] {service}: upgrading \.\.\. done in [0-9.]+ s "
                r"\(\d+ revisions?\)$",
                printed,
                re.M,
            ), printed[:3000]
        count, names = len(services), re.escape(", ".join(services))
        applied = re.search(
            rf"^migrated {count} services \((\d+) revisions applied\) in [0-9.]+ s$", printed, re.M
        )
        assert applied and int(applied.group(1)) > count, printed[:3000]
        summary = re.search(
            rf"^demo ready in [0-9.]+ s: {count} services up \({names}\), {count} webhook "
            rf"workers ready, {applied.group(1)} migrations applied, config \S+config\.ini$",
            printed,
            re.M,
        )
        assert summary, printed[-5000:]
        assert printed.index(summary.group(0)) < printed.index("The network is up:")
        for service in services:  # each worker reported its start-up before the summary
            ready = printed.index(f"srcore worker: {service} ready in ")
            assert printed.index(f"srcore worker {service}: [4/4] dispatcher: local") < ready
            assert ready < printed.index(summary.group(0))

        status, page = _get(urls["todo"] + "/")
        assert status == 200
        assert "Todo" in page
        for service, url in urls.items():
            assert url + "/" in page, f"{service} is missing from todo's nav"
        if not HAS_META:
            return

        # --first-port: meta gets it, todo the next.
        assert urls["meta"] == f"http://127.0.0.1:{first}"
        assert urls["todo"] == f"http://127.0.0.1:{first + 1}"
        assert "oauth-client-secret" in config
        meta, todo = urls["meta"], urls["todo"]
        assert "Start here" in printed
        assert f"{meta}/register" in printed
        assert f"{todo}/" in printed.split("Start here", 1)[1]
        assert f"{urls['paste']}/" in printed.split("Start here", 1)[1]
        assert "-m meta.admin make-admin NAME --config" in printed
        assert _get(meta + "/register")[0] == 200

        # Follow the printed steps: register, the mail appears in this output, confirm.
        browser = requests.Session()
        form = browser.get(f"{meta}/register", timeout=10)
        token = _CSRF.search(form.text)
        assert token, form.text[:2000]
        done = browser.post(
            f"{meta}/register",
            data={
                "csrf_token": token.group(1),
                "username": "demo",
                "email": "demo@example.org",
                "password": "correct horse battery staple",
            },
            timeout=10,
        )
        assert done.status_code == 200, done.text[:2000]
        link = confirmation_link(output, "demo@example.org")
        confirmed = browser.get(link, timeout=10)
        assert confirmed.status_code == 200
        assert "is confirmed" in confirmed.text
        # ... then todo's "Log in" (meta already knows the browser: no form).
        logged_in = browser.get(f"{todo}/login?next=/", timeout=10)
        assert logged_in.url == f"{todo}/", logged_in.url
        assert "demo" in logged_in.text
        assert "Your trackers" in logged_in.text
        # The webhook workers run beside the services and said what they serve.
        assert "Webhook workers: meta, paste, todo" in output.text


def confirmation_link(output: Output, address: str, *, timeout: float = 10) -> str:
    """The confirmation link of the mail to *address* the demo printed (smtp-host empty)."""
    mail = output.wait_for(
        rf"^{_LABEL}To: {re.escape(address)}$(?s:.*?)^{_LABEL}(http://\S+/confirm/\S+)$",
        timeout=timeout,
    )
    return mail.group(1)
