"""A ``limits`` storage over srcore's moving windows, for Flask-Limiter: ``srcore://``.

Flask-Limiter picks its storage by URI from ``limits``' registry of storage classes, which
a class joins by naming its scheme: importing this module makes ``srcore://`` known. It
stands apart from :mod:`srcore.throttle` so that only an app using it imports ``limits``'
storage base classes.
"""

from __future__ import annotations

from typing import NoReturn

from limits.storage import MovingWindowSupport, Storage

from srcore.throttle import make_store

__all__ = ["WindowsStorage"]


class WindowsStorage(Storage, MovingWindowSupport):
    """A :mod:`limits` storage for Flask-Limiter's moving-window strategy, over
    :func:`make_store`: ``Limiter(storage_uri="srcore://", strategy="moving-window",
    storage_options={"redis_url": url})``.

    With no ``redis_url`` the windows are kept in process (:class:`srcore.windows.MovingWindows`,
    at most ``max_keys`` keys), where ``limits``' own memory storage would walk every key it
    holds after each hit. With one they are kept in Redis, and in process while Redis cannot
    be reached (:class:`FallbackStore`): Flask-Limiter's own fallback for that is ``limits``'
    memory storage again, so it is left off and this storage never raises for Redis.

    Only the moving-window strategy is served: the fixed-window calls raise.
    """

    STORAGE_SCHEME = ["srcore"]

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        redis_url: str = "",
        timeout: float = 2.0,
        max_keys: int = 100_000,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions)
        self.store = make_store(redis_url, timeout=float(timeout), max_keys=int(max_keys))

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        # Redis's errors are caught by the FallbackStore; nothing else is the storage's.
        return ()

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return self.store.acquire_entry(key, limit, expiry, amount)

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        return self.store.get_moving_window(key, limit, expiry)

    def clear(self, key: str) -> None:
        self.store.clear(key)

    def check(self) -> bool:
        # Counting goes on (in process) while Redis is away.
        return True

    def reset(self) -> int | None:
        from srcore.windows import MovingWindows

        if isinstance(self.store, MovingWindows):
            return self.store.reset()
        # limits' Redis reset deletes every key under its prefix, the throttle's too.
        raise RuntimeError("rate limits kept in Redis are not reset from here")

    def _fixed_window(self) -> NoReturn:
        raise RuntimeError(f"{type(self).__name__} serves the moving-window strategy only")

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self._fixed_window()

    def get(self, key: str) -> int:
        self._fixed_window()

    def get_expiry(self, key: str) -> float:
        self._fixed_window()
