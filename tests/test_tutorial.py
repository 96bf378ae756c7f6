"""docs/tutorial.md, followed literally: every command in it runs and the service it builds
answers its API call and receives its webhook.

The page's conventions, which this test relies on:

- A block fenced exactly ```` ```sh ```` is run. Every other fence (``text``, ``ini``,
  ``python``, a bare one, ...) is shown to the reader, never run.
- The ``sh`` blocks run in order in **one** bash, so ``cd``, exported variables and the
  virtualenv's activation carry from one block to the next, as in the reader's terminal.
  The shell has ``set -eo pipefail``: any command that fails stops the run, and the test
  names the block.
- A non-``sh`` block whose first line is ``# PATH`` quotes the file PATH (relative to the
  tutorial's directory). After the run, each part of the quote between lines reading
  ``...`` must appear in that file verbatim, so the tour of the generated service cannot
  drift from what ``srcore new-service`` writes.

What the test provides, and nothing else (the commands are not edited):

- a fresh temporary directory holding a copy of this checkout (the files ``git ls-files``
  lists, tracked or new and not ignored) as ``srcore/``: the clone the page asks for;
- ``python3`` on ``PATH`` is the interpreter running these tests (the page needs 3.11+);
- the environment without this run's virtualenv, ``SRCORE_*``, ``PYTEST_*`` and
  ``PYTHON*`` variables, with ``PIP_DISABLE_PIP_VERSION_CHECK`` and ``PIP_NO_INPUT`` set;
  ``CI`` passes through, so under ``CI=true`` the generated tests' PostgreSQL runs are
  required, as everywhere else in the suite.

The page uses the fixed ports 5500 to 5502 on 127.0.0.1. :func:`srcore.testing.free_port`
hands out ports from the ephemeral range, so other tests running in parallel do not take
them. Two runs of this test on one machine (two checkouts under test at once) would, so a
run holds a lock file in the temporary directory and the next one waits for it; if
anything else listens on those ports, the test fails and names the port. bash runs in a
session of its own: everything the page starts in the background (gunicorn, the workers,
the receiver) is in its process group, which is killed at the end whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
PORTS = (5500, 5501, 5502)
#: The whole run: a fresh virtualenv installs srcore's dependencies, usually in 1-2 minutes.
TIMEOUT = 900
MARK = "::tutorial-block"
#: Held while a run uses the ports: one checkout's run waits for another's.
PORTS_LOCK = Path(tempfile.gettempdir()) / "srcore-tutorial-ports.lock"
_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced block of the page."""

    language: str
    text: str
    line: int  # of the opening fence, 1-based


def fenced_blocks(markdown: str) -> list[Block]:
    """The page's fenced blocks in order; an unclosed fence is an error, not a silent skip."""
    blocks: list[Block] = []
    language: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = _FENCE.match(line)
        if language is None:
            if fence:
                language, start, body = fence.group(1), number, []
        elif line.rstrip() == "```":
            blocks.append(Block(language, "\n".join(body), start))
            language = None
        else:
            body.append(line)
    if language is not None:
        raise AssertionError(f"{TUTORIAL.name}:{start}: the fence opened here is never closed")
    return blocks


def shell_blocks(markdown: str) -> list[Block]:
    return [b for b in fenced_blocks(markdown) if b.language == "sh"]


def quotes(markdown: str) -> list[tuple[Block, str, list[str]]]:
    """(block, path, parts) of every block quoting a file: first line ``# PATH``."""
    found = []
    for block in fenced_blocks(markdown):
        if block.language == "sh":
            continue
        first, _, rest = block.text.partition("\n")
        named = re.fullmatch(r"# ([\w./-]+)", first.strip())
        if named is None:
            continue
        parts = [p.strip("\n") for p in re.split(r"^\s*\.\.\.\s*$", rest, flags=re.M)]
        found.append((block, named.group(1), [p for p in parts if p.strip()]))
    return found


def script(blocks: list[Block]) -> str:
    """One bash script running *blocks* in order, with a marker before and after each."""
    lines = ["set -eo pipefail"]
    for index, block in enumerate(blocks, 1):
        lines += [
            f"echo {shlex.quote(f'{MARK} {index} start')}",
            block.text,
            f"echo {shlex.quote(f'{MARK} {index} done')} after ${{SECONDS}} s",
        ]
    return "\n".join(lines) + "\n"


def copy_checkout(target: Path) -> int:
    """Copy the files of this checkout that git knows or would add; return how many."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the tutorial test copies the checkout with `git ls-files`: {exc}")
    count = 0
    for name in listed.decode().split("\0"):
        source = ROOT / name
        if not name or not source.is_file():  # deleted in the work tree, or a submodule
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
        count += 1
    return count


def environment(shim: Path) -> dict[str, str]:
    """The environment the page's commands get: see the module's docstring."""
    own_bin = Path(sys.prefix) / "bin"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SRCORE_", "PYTEST_", "PYTHON"))
        and key not in {"VIRTUAL_ENV", "VIRTUAL_ENV_PROMPT"}
    }
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != own_bin]
    env["PATH"] = os.pathsep.join([str(shim), *path])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def python3_shim(directory: Path) -> Path:
    """A directory whose ``python3`` is the interpreter running the tests (not its venv)."""
    directory.mkdir()
    base = getattr(sys, "_base_executable", None) or sys.executable
    (directory / "python3").symlink_to(os.path.realpath(base))
    return directory


def require_tools() -> None:
    missing = [tool for tool in ("bash", "curl", "patch") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the tutorial needs {', '.join(missing)}: install it to run this test")


def require_free_ports() -> None:
    for port in PORTS:
        with socket.socket() as sock:
            # As gunicorn and the receiver do: only a listening socket makes a port taken,
            # not the TIME_WAIT connections an earlier run left.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(
                    f"port {port} on 127.0.0.1 is in use, and the tutorial serves on 5500-5502: "
                    "stop what listens there (an earlier run of the tutorial?) and run again"
                )


@contextlib.contextmanager
def ports_lock(timeout: float, path: Path = PORTS_LOCK) -> Iterator[None]:
    """Hold the machine-wide lock on the tutorial's ports, waiting up to *timeout* for it."""
    import fcntl

    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another run of the tutorial held {path} for over {timeout:.0f} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop bash and everything it started: SIGTERM, a bounded wait, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    process.poll()


def block_outputs(output: str) -> dict[int, str]:
    """What each block printed, by block number (a block that did not finish included)."""
    found: dict[int, str] = {}
    parts = re.split(rf"^{re.escape(MARK)} (\d+) (start|done)\b.*$", output, flags=re.M)
    for i in range(1, len(parts) - 2, 3):
        if parts[i + 1] == "start":
            found[int(parts[i])] = parts[i + 2]
    return found


def failure_report(blocks: list[Block], output: str, work: Path, why: str) -> str:
    done = [int(n) for n in re.findall(rf"^{re.escape(MARK)} (\d+) done\b", output, re.M)]
    failed = (max(done) if done else 0) + 1
    lines = [why]
    if failed <= len(blocks):
        block = blocks[failed - 1]
        lines += [
            f"block {failed} of {len(blocks)} ({TUTORIAL.name}:{block.line}) did not finish:",
            block.text,
        ]
    lines += ["--- output (last 6000 characters) ---", output[-6000:]]
    for log in sorted(work.glob("*.log")):
        text = log.read_text(errors="replace")
        lines += [f"--- {log.name} (last 2000 characters) ---", text[-2000:]]
    return "\n".join(lines)


# -- the page's shape, checked without running anything ------------------------------------


def test_the_page_has_the_run_blocks_and_quotes_the_test_relies_on() -> None:
    markdown = TUTORIAL.read_text(encoding="utf-8")
    blocks = shell_blocks(markdown)
    commands = "\n".join(b.text for b in blocks)
    for needed in (
        "python3 -m venv",
        "pip install './srcore[server,postgres]' ./srcore/example_services/meta",
        "srcore new-service bookmarks",
        "srcore migrate bookmarks revision",
        "srcore serve meta",
        "srcore serve bookmarks",
        "srcore worker bookmarks",
        "python -m meta.admin create-token",
        "/api/webhooks",
        "grep verified receiver.log",
    ):
        assert needed in commands, f"the tutorial no longer runs {needed!r}"
    # Whatever keeps running is sent to the background, or the run would never go on.
    for block in blocks:
        for line in block.text.splitlines():
            if re.match(r"\s*(srcore (serve|worker)|python receiver\.py)\b", line):
                assert line.rstrip().endswith("&"), f"{TUTORIAL.name}:{block.line}: {line}"
    assert len(quotes(markdown)) >= 6
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "](docs/tutorial.md)" in readme and "](tutorial.md)" in index


def test_fences_are_read_in_order_and_an_unclosed_one_fails() -> None:
    page = "intro\n```sh\necho 1\n```\n```text\nnot run\n```\n```sh\necho 2\n```\n"
    assert [(b.language, b.text, b.line) for b in fenced_blocks(page)] == [
        ("sh", "echo 1", 2),
        ("text", "not run", 5),
        ("sh", "echo 2", 8),
    ]
    assert [b.text for b in shell_blocks(page)] == ["echo 1", "echo 2"]
    with pytest.raises(AssertionError, match="never closed"):
        fenced_blocks("```sh\necho 1\n")


def test_a_second_run_waits_for_the_ports_lock_then_fails_clearly(tmp_path: Path) -> None:
    lock = tmp_path / "ports.lock"
    with ports_lock(timeout=0, path=lock):
        started = time.monotonic()
        with (
            pytest.raises(pytest.fail.Exception, match="another run of the tutorial held"),
            ports_lock(timeout=1.5, path=lock),
        ):
            pass
        assert time.monotonic() - started >= 1.5
    with ports_lock(timeout=0, path=lock):  # released: free again at once
        pass


# -- the run -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tutorial_runs_literally(tmp_path: Path) -> None:
    require_tools()
    with ports_lock(timeout=TIMEOUT):
        require_free_ports()
        run_the_tutorial(tmp_path)


def run_the_tutorial(tmp_path: Path) -> None:
    markdown = TUTORIAL.read_text(encoding="utf-8")
    blocks = shell_blocks(markdown)
    work = tmp_path / "tutorial"
    work.mkdir()
    assert copy_checkout(work / "srcore") > 50
    env = environment(python3_shim(tmp_path / "bin"))
    (tmp_path / "tutorial.sh").write_text(script(blocks), encoding="utf-8")
    log_path = tmp_path / "output.txt"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", str(tmp_path / "tutorial.sh")],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            try:
                status: int | None = process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                status = None
        finally:
            kill_group(process)
    output = log_path.read_text(errors="replace")
    elapsed = time.monotonic() - started
    if status is None:
        pytest.fail(failure_report(blocks, output, work, f"the tutorial ran over {TIMEOUT} s"))
    if status != 0 or output.count(f"{MARK} ") != 2 * len(blocks):
        why = f"the tutorial's shell exited with {status} after {elapsed:.0f} s"
        pytest.fail(failure_report(blocks, output, work, why))

    outputs = block_outputs(output)
    by_text = {i: b.text for i, b in enumerate(blocks, 1)}
    # The first API call: alice has no bookmarks yet.
    first_call = next(i for i, t in by_text.items() if t.strip().endswith("/api/items"))
    assert '{"results":[],"next":null}' in outputs[first_call]
    # The delivery arrived and passed verify() (the receiver prints only what passes).
    (waited,) = [i for i, t in by_text.items() if "grep verified receiver.log" in t]
    assert "verified item:created: The srcore tutorial" in outputs[waited]
    assert "refused" not in (work / "receiver.log").read_text()
    # The last API call lists the bookmark, with the field added in section 7.
    last = outputs[max(i for i, t in by_text.items() if "/api/items" in t)]
    assert '"title":"The srcore tutorial"' in last
    assert '"url":"https://example.org/srcore"' in last
    assert '"username":"alice"' in last
    assert list((work / "bookmarks" / "bookmarks" / "migrations" / "versions").glob("*_add_url.py"))

    # The tour quotes the generated files as they are.
    for block, path, parts in quotes(markdown):
        text = (work / path).read_text(encoding="utf-8")
        for part in parts:
            assert part in text, f"{TUTORIAL.name}:{block.line} quotes {path} wrongly:\n{part}"
