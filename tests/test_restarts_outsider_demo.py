"""`make demo` killed outright (``kill -9``, the OOM killer): its children go with it.

The demo runs no code when it is killed so, and its children each run in a session of
their own; without the watchdog its supervisor starts, every gunicorn (master and
workers) and every webhook worker kept running, holding the ports the next `make demo`
needs. Also the watchdog on its own: it stops what is registered, not what was released.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_demo_outsider import READY_TIMEOUT, _demo, _finish, _gone
from test_supervisor import MARKER, _marked, _port_block, _python

from srcore.process_groups import group_alive, watch_groups

pytestmark = pytest.mark.slow


def test_a_demo_killed_with_sigkill_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    var = tmp_path / "var"
    first = _port_block()
    marker = f"kill9-{os.getpid()}-{time.monotonic_ns()}"
    process, output = _demo(var, first, marker)
    try:
        output.wait_for(r"Ctrl-C stops everything", timeout=READY_TIMEOUT)
        found = re.findall(r"http://127\.0\.0\.1:(\d+)/$", output.text, re.M)
        ports = [int(port) for port in found]
        assert len(ports) >= 2, output.text
        # Servers, their gunicorn workers and the webhook workers: all running now.
        assert len(_marked(marker)) > len(ports), _marked(marker)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert _gone(marker, ports), f"left running after kill -9: {_marked(marker)}"
    finally:
        _finish(process, output, marker)


def _sleeper(marker: str) -> subprocess.Popen[bytes]:
    """A process group of two (a parent and its child) carrying *marker*."""
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "time.sleep(120)\n"
    )
    return subprocess.Popen(
        _python(code), env=dict(os.environ, **{MARKER: marker}), start_new_session=True
    )


def test_the_watchdog_stops_registered_groups_at_end_of_file_and_spares_released_ones() -> None:
    marker = f"watchdog-{os.getpid()}-{time.monotonic_ns()}"
    kept, released = _sleeper(marker), _sleeper(marker + "-released")
    try:
        deadline = time.monotonic() + 30
        while len(_marked(marker)) < 2 or len(_marked(marker + "-released")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        lines = f"+{kept.pid}\n+{released.pid}\nnoise\n-{released.pid}\n".encode()
        stopped = watch_groups(io.BytesIO(lines), grace=5)
        kept.wait(timeout=10)
        assert stopped == [kept.pid]
        deadline = time.monotonic() + 10
        while group_alive(kept.pid):
            assert time.monotonic() < deadline, _marked(marker)
            time.sleep(0.05)
        assert len(_marked(marker + "-released")) == 2
    finally:
        for child in (kept, released):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)


def test_the_watchdog_runs_without_srcore_on_its_path() -> None:
    """It is started as ``python -I process_groups.py``: the standard library only."""
    import srcore.process_groups

    done = subprocess.run(
        [sys.executable, "-I", srcore.process_groups.__file__, "1"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
