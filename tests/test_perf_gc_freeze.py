"""A gunicorn worker's garbage collector leaves alone the objects the app was built with.

Building a service's app leaves ~100,000 objects; a worker's first full collection
(srcore's workers ran it within their first ~1,300 requests, bare Flask's after ~10,000)
scanned them all, some 80 ms of CPU taken from requests, and every later full collection
scans them again. Frozen once the worker has loaded the app (gc.freeze), they are not."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from srcore.serving import gunicorn_options
from srcore.testing import free_port

APP = """
import gc
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(gc.get_freeze_count()).encode()]
"""


def test_a_worker_freezes_what_it_loaded(tmp_path: Path) -> None:
    (tmp_path / "gcapp.py").write_text(APP, encoding="utf-8")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--no-control-socket",
        "--pythonpath",
        str(tmp_path),
        *gunicorn_options(),
        "gcapp:app",
    ]
    server = subprocess.Popen(argv, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    frozen = int(answer.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not answer"
                time.sleep(0.1)
        assert frozen > 0
    finally:
        server.terminate()
        server.wait(timeout=30)
