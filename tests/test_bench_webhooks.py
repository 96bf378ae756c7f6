"""The webhook benchmark runs to the end (``--quick``, on SQLite): a change to the code it
drives breaks this test rather than the next person who measures. Times are not checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "webhooks.py"


def test_the_quick_webhook_benchmark_runs_every_section() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--backends", "sqlite"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    crowded = "deliveries per second with other users'"
    for heading in ("emit + commit", "deliveries per second", crowded, "fairness", "SIGTERM"):
        assert f"webhooks: {heading}" in out, out
    # Everything delivered: by the local worker, and by Celery where a redis-server can be
    # started for it (the benchmark leaves its Celery rows out otherwise).
    celery = shutil.which("redis-server") is not None
    assert out.count("2000/2000") == (2 if celery else 1), out
    # With none and with 20,000 other users' subscriptions, everything delivered.
    crowd = out.split("other users' subscriptions")[1].split("goal:")[0]
    assert crowd.count("1000/1000") == 2 and "20,000" in crowd, out
    assert "trickled, cut" in out, out
    # The worker stopped on SIGTERM with status 0, leaving the 40 deliveries due.
    shutdown = out.split("SIGTERM to exit")[1].splitlines()[2].split()
    assert shutdown[0] == "sqlite" and (shutdown[2], shutdown[4]) == ("0", "40"), out
