"""What meta and the services agree on about accounts, spelled once for both sides.

:mod:`srcore.identity.protocol` is plain values and functions, so meta (writing and
checking events in its database) and every service (applying them in memory) import the
same definitions without pulling in each other's machinery.
"""

from __future__ import annotations

__all__: list[str] = []
