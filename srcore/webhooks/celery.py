"""Celery: the worker loop on many machines, woken after a commit.

``SRCORE_SERVICE=todo celery -A srcore.webhooks.celery worker --beat`` (one ``--beat`` per
service; see the operators' guide). Each service has its own queue,
``srcore-webhooks.<service>``. The one task, ``drain``, runs
:meth:`~srcore.webhooks.worker.Worker.drain` until nothing is due (or for a minute, then
queues its successor). The broker carries wake-ups only; the database is the queue: a
commit that emitted queues a ``drain`` unless one is queued and not started (a Redis key,
deleted by the task before it looks); beat queues one every poll interval for retries
and whatever a lost message left; a drain that finds more than it holds queues one more,
up to ``webhook-celery-slots`` at once. A lost message delays deliveries, never loses one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from srcore.extras import MissingExtraError

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask

    from srcore.webhooks.worker import Worker

__all__ = [
    "DRAIN",
    "CeleryDispatcher",
    "NoServiceError",
    "default_app",
    "make_celery",
    "queue_name",
]

log = logging.getLogger("srcore.webhooks")

#: The task's name; the same in every service, routed to the service's own queue.
DRAIN = "srcore.webhooks.drain"
#: How long one task drains before it hands on to a new message.
DRAIN_TIME = 60.0
#: How long a broker call may take before the wake-up is left to beat.
PUBLISH_TIMEOUT = 2.0


def queue_name(service_id: str) -> str:
    """The broker queue of *service_id*'s webhook tasks."""
    return f"srcore-webhooks.{service_id}"


def celery_config(broker: str, service_id: str, *, tick: float) -> dict[str, Any]:
    """The Celery settings of a service's webhook app (plain values, no IO)."""
    queue = queue_name(service_id)
    return {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": PUBLISH_TIMEOUT,
        "broker_transport_options": {
            "visibility_timeout": 600,
            "socket_connect_timeout": PUBLISH_TIMEOUT,
            "socket_timeout": 5.0,
        },
        "task_default_queue": queue,
        # A killed worker's message goes back to the queue: acknowledged after the task.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 1, "interval_start": 0},
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "srcore-webhooks-tick": {
                "task": DRAIN,
                "schedule": tick,
                "options": {"queue": queue, "expires": max(tick, 1.0)},
            }
        },
    }


class _Wakeups:
    """The ``drain`` messages of one service: queued after commits, coalesced in Redis."""

    def __init__(self, celery_app: Celery, service_id: str, broker: str, slots: int) -> None:
        self.celery_app = celery_app
        self.queue = queue_name(service_id)
        self.key = f"srcore-webhooks:{service_id}:queued"
        self.slots = slots
        self._redis: Any = None
        if broker.startswith(("redis://", "rediss://")):
            import redis

            self._redis = redis.Redis.from_url(
                broker, socket_timeout=PUBLISH_TIMEOUT, socket_connect_timeout=PUBLISH_TIMEOUT
            )

    def send(self, spread: int = 0) -> None:
        self.celery_app.send_task(DRAIN, args=[spread], queue=self.queue)

    def after_commit(self) -> None:
        """Queue a drain unless one is queued and not started (raises if the broker is
        down: the caller logs it and beat's next drain finds the rows)."""
        if self._redis is not None and not self._redis.set(self.key, 1, nx=True, ex=60):
            return
        self.send()

    def started(self) -> None:
        if self._redis is not None:
            try:
                self._redis.delete(self.key)
            except Exception as exc:  # it expires; commits meanwhile wait for beat
                log.warning("could not clear the queued-drain mark: %s", exc)


def make_celery(
    app: Flask,
    *,
    broker: str | None = None,
    worker: Callable[[], Worker] | None = None,
    tick: timedelta | None = None,
    drain_time: float = DRAIN_TIME,
) -> Celery:
    """The Celery app of *app*'s webhooks (objects only: nothing connects yet).

    *broker* defaults to ``[global] webhooks-broker``; *worker* builds each process's
    :class:`~srcore.webhooks.worker.Worker` (tests give fast timings); *tick* is beat's.
    """
    try:
        from celery import Celery
    except ImportError as exc:
        raise MissingExtraError("celery", "webhook delivery through Celery") from exc

    from srcore.webhooks.worker import Worker, poll_interval_for

    st = app.extensions["srcore"]
    g = st.config.global_
    broker = broker or str(g.get("webhooks-broker") or "")
    if not broker:
        raise ValueError(
            f"[global] webhooks-broker is empty in {st.config.path}: the Celery dispatcher "
            "needs a broker URL (the local worker needs none)"
        )
    seconds = tick.total_seconds() if tick is not None else max(poll_interval_for(app), 1.0)
    celery_app = Celery(f"srcore-webhooks-{st.service_id}", set_as_current=False)
    celery_app.conf.update(celery_config(broker, st.service_id, tick=seconds))
    wakeups = _Wakeups(celery_app, st.service_id, broker, int(g.get("webhook-celery-slots") or 8))
    build = worker or (lambda: Worker(app))
    idle: list[Worker] = []  # one per task running at once (a threads pool runs several)
    lock = threading.Lock()

    def forget() -> None:  # a forked child builds its own threads, pools and connections
        idle.clear()
        st.db.engine.dispose(close=False)

    os.register_at_fork(after_in_child=forget)

    def drain(spread: int = 0) -> int:
        wakeups.started()
        with lock:
            w = idle.pop() if idle else None
        w = w or build()
        try:
            if int(spread) + 1 < wakeups.slots and w.batch <= _backlog(w):
                wakeups.send(int(spread) + 1)  # more is waiting than one process holds
            until = time.monotonic() + drain_time
            handled = w.drain(until=until)
            if time.monotonic() >= until:
                wakeups.send(int(spread))  # out of time, maybe not done: a successor
        finally:
            with lock:
                idle.append(w)
        return handled

    celery_app.task(name=DRAIN, ignore_result=True, shared=False)(drain)
    celery_app.webhook_wakeups = wakeups
    celery_app.flask_app = app
    return celery_app


def _backlog(worker: Worker) -> int:
    """Outbox rows not yet fanned out, up to a batch: more than one process holds?"""
    from sqlalchemy import select

    from srcore.webhooks.models import OutboxRow

    with worker.state.db.session() as session:
        waiting = select(OutboxRow.id).where(OutboxRow.fanned_out_at.is_(None))
        return len(list(session.scalars(waiting.limit(worker.batch))))


class CeleryDispatcher:
    """A commit queues a ``drain``. Built without IO (the Celery app at the first nudge);
    a broker that cannot be reached costs a request a couple of seconds at most."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CeleryDispatcher {self.app.extensions['srcore'].service_id}>"

    @property
    def celery(self) -> Celery:
        """The Celery app that carries this service's task."""
        with self._lock:
            if self._celery is None:
                self._celery = make_celery(self.app)
            return self._celery

    def nudge(self, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            self.celery.webhook_wakeups.after_commit()

    def nudge_deliveries(self, delivery_ids: Sequence[int]) -> None:
        if delivery_ids:
            self.celery.webhook_wakeups.after_commit()


# -- `celery -A srcore.webhooks.celery` ---------------------------------------------------

_default: Celery | None = None
_default_lock = threading.Lock()


def _service_factory(spec: str) -> Callable[..., Flask]:
    """The app factory of *spec*: an installed service id, a package, or ``module:name``."""
    import importlib
    from importlib import metadata

    module_name, _, attribute = spec.partition(":")
    packages = {ep.name: ep.value for ep in metadata.entry_points(group="srcore.services")}
    module = importlib.import_module(packages.get(module_name, module_name))
    factory: Callable[..., Flask] = getattr(module, attribute or "create_app")
    return factory


class NoServiceError(RuntimeError, AttributeError):
    """``SRCORE_SERVICE`` is not set (an AttributeError too: ``hasattr(module, "app")``
    must not fail)."""


def default_app(environ: dict[str, str] | None = None) -> Celery:
    """The Celery app of ``SRCORE_SERVICE`` (a service id, package or ``module:factory``)
    with ``SRCORE_CONFIG``; built once per process, on first use."""
    global _default
    env = os.environ if environ is None else environ
    with _default_lock:
        if _default is None:
            spec = env.get("SRCORE_SERVICE", "").strip()
            if not spec:
                raise NoServiceError(
                    "set SRCORE_SERVICE to the service whose webhooks this worker delivers "
                    "(e.g. SRCORE_SERVICE=todo), and SRCORE_CONFIG to its config file"
                )
            flask_app = _service_factory(spec)(config=env.get("SRCORE_CONFIG") or None)
            _default = make_celery(flask_app)
        return _default


def __getattr__(name: str) -> Any:
    # `celery -A srcore.webhooks.celery` reads the module's `app`: built only then.
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
