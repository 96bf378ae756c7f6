"""``python -m meta.admin make-admin USERNAME --config PATH``."""

from __future__ import annotations

from meta.admin.cli import main

main()
