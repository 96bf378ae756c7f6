"""``srcore dev`` as a newcomer uses it: the config saved half-edited while it runs, and a
second run on a config that ``make demo`` (or another ``srcore dev``) runs already."""

from __future__ import annotations

import os
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
from test_demo_outsider import GONE_TIMEOUT, READY_TIMEOUT, _env, _finish
from test_supervisor import _dev_command, _port_block, _Reader

from srcore.dev import config_problems
from srcore.supervisor import lock_path, running_alone

pytestmark = pytest.mark.slow


def _start(argv: list[str], marker: str) -> tuple[subprocess.Popen[str], _Reader]:
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(marker) | {"NO_COLOR": "1"},
        start_new_session=True,
    )
    assert process.stdout is not None
    return process, _Reader(process.stdout)


def test_a_half_edited_config_keeps_the_running_processes(tmp_path: Path) -> None:
    """The config saved with a typo while ``srcore dev`` runs: every process was stopped,
    started again, printed the same errors (four times for two services) and exited,
    leaving nothing to work with until the next save. Now the errors are said once and the
    running processes are kept; saving the fixed config restarts them."""
    first = _port_block()
    argv, _first_line, _label = _dev_command(tmp_path, first)
    config = tmp_path / "config.ini"
    good = config.read_text(encoding="utf-8")
    marker = uuid.uuid4().hex
    process, output = _start([*argv, "meta", "--no-workers"], marker)
    try:
        output.wait_for(r"ready: 1 of 1 services up", timeout=READY_TIMEOUT)
        config.write_text(good.replace("[todo]", "[todo\nbroken = = ="), encoding="utf-8")
        output.wait_for(r"\d+ problems? would stop every process", timeout=GONE_TIMEOUT)
        output.wait_for(r"dev +\|   \S+config\.ini:\d+ .*not a 'key = value' line", timeout=5)
        assert "restarting" not in output.text and "exited with status" not in output.text
        # The same meta still serves.
        with urllib.request.urlopen(f"http://127.0.0.1:{first}/healthz", timeout=10) as answer:
            assert answer.status == 200
        config.write_text(good, encoding="utf-8")
        output.wait_for(r"config\.ini changed: restarting 1 process", timeout=GONE_TIMEOUT)
        output.wait_for(r"started meta \(pid \d+\)(?s:.*)started meta \(pid", timeout=10)
    finally:
        _finish(process, output, marker)
    assert process.returncode == 0, output.text[-4000:]


def test_config_problems_are_those_of_config_check(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[global]\nenvironment = development\n[meta\n", encoding="utf-8")
    problems = config_problems(config)
    assert problems and all(str(config) in problem for problem in problems), problems
    (tmp_path / "ok").mkdir()
    _dev_command(tmp_path / "ok", _port_block())
    assert config_problems(tmp_path / "ok" / "config.ini") == []


def test_srcore_dev_on_a_config_a_demo_runs_says_which_and_starts_nothing(
    tmp_path: Path,
) -> None:
    """``srcore dev`` on the config of a demo that is still setting up (its ports not yet
    taken, so the port check let it through): it started migrating the databases the demo
    was migrating. It now names the demo that holds the config and exits 1."""
    first = _port_block()
    argv, _first_line, _label = _dev_command(tmp_path, first)
    marker = uuid.uuid4().hex
    with running_alone(lock_path(tmp_path / "config.ini"), "make demo"):
        process, output = _start(argv, marker)
        try:
            process.wait(timeout=60)
        finally:
            _finish(process, output, marker)
    assert process.returncode == 1, output.text[-4000:]
    assert f"cannot start: make demo (pid {os.getpid()}, since " in output.text, output.text
    assert "runs already on" in output.text and "migrating" not in output.text, output.text
