"""Headless Chromium for browser tests: Debian's build, driven by Playwright."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from srcore.testing.skipping import require_or_skip

__all__ = ["CHROMIUM_ARGS", "chromium_path", "launch_chromium"]


#: Flags for headless Chromium on a machine with no network and no GPU, running as root.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str | None:
    """Debian's Chromium, which browser tests drive (Playwright cannot download one here)."""
    import shutil

    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's Chromium; skips (fails under CI) when unavailable."""
    path = chromium_path()
    require_or_skip(path is not None, "Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
