"""Objects that keep threads, locks or sockets, and a process that forks.

gunicorn and Celery's prefork pool fork worker processes from a parent that may have
built such objects already. A child has none of the parent's threads, and a lock one of
them held at the fork stays held for good; :func:`reset_in_child` lets an object start
afresh in the child instead of comparing process ids on every use.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

__all__ = ["reset_in_child"]


def reset_in_child(method: Callable[[], object]) -> None:
    """Call the bound *method* in every forked child, for as long as its object lives.

    Only a weak reference is kept, so registering does not keep the object alive.
    """
    ref = weakref.WeakMethod(method)

    def after_fork() -> None:
        found = ref()
        if found is not None:
            found()

    os.register_at_fork(after_in_child=after_fork)
