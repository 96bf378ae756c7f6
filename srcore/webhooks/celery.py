"""Celery runs the worker loop on many machines: ``SRCORE_SERVICE=todo celery -A
srcore.webhooks.celery worker --beat``. The broker carries wake-ups only: the database is the queue
and beat queues a ``drain`` every poll interval, so a lost message only delays."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from srcore.extras import MissingExtraError
from srcore.forks import temporary_directory_problem
from srcore.logsetup import offset_celery_times, yield_to_host
from srcore.manifest import ManifestError, service_package
from srcore.webhooks.models import OutboxRow

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask

    from srcore.webhooks.worker import Worker

__all__ = ["DRAIN", "CeleryDispatcher", "default_app", "make_celery", "queue_name"]

log = logging.getLogger("srcore.webhooks")

#: The task's name; the same in every service, routed to the service's own queue.
DRAIN = "srcore.webhooks.drain"
#: How long a broker call may take before the wake-up is left to beat.
PUBLISH_TIMEOUT = 2.0


def queue_name(service_id: str) -> str:
    """The broker queue of *service_id*'s webhook tasks."""
    return f"srcore-webhooks.{service_id}"


class _Wakeups:
    """A commit queues a ``drain`` unless one waits (a Redis mark): a burst costs one message."""

    def __init__(self, celery_app: Celery, service_id: str, broker: str, slots: int) -> None:
        self.celery_app, self.queue, self.slots = celery_app, queue_name(service_id), slots
        self.key = f"srcore-webhooks:{service_id}:queued"
        self._redis: Any = None
        self.failed = False  # a SET that timed out may land later: a mark, but no drain queued
        if broker.startswith(("redis://", "rediss://")):
            import redis

            timeouts = dict(socket_timeout=PUBLISH_TIMEOUT, socket_connect_timeout=PUBLISH_TIMEOUT)
            self._redis = redis.Redis.from_url(broker, **timeouts)

    def send(self, spread: int = 0) -> None:
        self.celery_app.send_task(DRAIN, args=[spread], queue=self.queue)

    def after_commit(self) -> None:
        """Raises if the broker is down; the next commit then sets the mark anew, and sends."""
        self.failed, unless_queued = True, not self.failed
        if self._redis is None or self._redis.set(self.key, 1, nx=unless_queued, ex=60):
            self.send()
        self.failed = False

    def started(self) -> None:
        try:
            if self._redis is not None:
                self._redis.delete(self.key)
        except Exception as exc:  # it expires; commits meanwhile wait for beat
            log.warning("could not clear the queued-drain mark: %s", exc)


def make_celery(
    app: Flask,
    *,
    broker: str | None = None,
    worker: Callable[[], Worker] | None = None,
    tick: timedelta | None = None,
    drain_time: float = 60.0,
) -> Celery:
    """The Celery app of *app*'s webhooks, built without connecting; *broker* defaults to
    ``[global] webhooks-broker``. Tests shorten the timings with *worker* (builds each task's
    worker), *tick* (beat's) and *drain_time* (a task's, after which it queues its successor)."""
    try:
        from celery import Celery
        from celery.signals import (
            after_setup_logger,
            after_setup_task_logger,
            celeryd_init,
            worker_process_init,
        )
    except ImportError as exc:
        raise MissingExtraError("celery", "webhook delivery through Celery") from exc

    from srcore.webhooks.settings import settings_for
    from srcore.webhooks.worker import Worker

    st = app.extensions["srcore"]
    broker = broker or str(st.config.global_["webhooks-broker"] or "")
    if not broker:
        why = "the Celery dispatcher needs a broker URL (the local worker needs none)"
        raise ValueError(f"[global] webhooks-broker is empty in {st.config.path}: {why}")
    tick = tick if tick is not None else max(settings_for(app).poll_interval, timedelta(seconds=1))
    seconds = tick.total_seconds()
    # A tick nobody took within a tick is dropped: ticks do not pile up without workers.
    options = {"queue": queue_name(st.service_id), "expires": max(seconds, 1.0)}
    celery_app = Celery(f"srcore-webhooks-{st.service_id}", set_as_current=False)
    celery_app.conf.update(
        broker_url=broker,
        broker_connection_retry_on_startup=True,  # a worker started first waits for its broker
        # A broker that cannot be reached costs a committing request a few seconds at most.
        broker_connection_timeout=PUBLISH_TIMEOUT,
        broker_transport_options={"socket_connect_timeout": PUBLISH_TIMEOUT, "socket_timeout": 5},
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0},
        task_default_queue=options["queue"],
        worker_prefetch_multiplier=1,  # a drain waiting is left to an idle process
        worker_hijack_root_logger=False,  # handlers an operator put on the root logger stay
        beat_schedule={"srcore-webhooks-tick": dict(task=DRAIN, schedule=seconds, options=options)},
        # beat keeps its schedule in memory: one tick, nothing to remember across restarts.
        # Celery's default kept it in a file in the working directory, and a beat that
        # could not write there (a read-only /, a container) died with tracebacks while
        # the worker ran on without it: retries were never picked up.
        beat_scheduler="celery.beat:Scheduler",
    )
    slots = int(st.config.global_["webhook-celery-slots"])
    wakeups = _Wakeups(celery_app, st.service_id, broker, slots)
    build = worker or (lambda: Worker(app))
    idle: list[Worker] = []  # one per task running at once (a threads pool runs several)
    lock = threading.Lock()

    def drain(spread: int = 0) -> int:
        """Run the loop until nothing is due (or *drain_time*, then hand on); ask one more
        process to join while more waits than one holds, up to *slots* at once."""
        wakeups.started()  # before looking: a commit that found the mark is seen here
        with lock:
            w = idle.pop() if idle else build()
        try:
            if spread + 1 < wakeups.slots:
                with st.db.session() as session:  # outbox rows not yet fanned out
                    waiting = select(OutboxRow.id).where(OutboxRow.fanned_out_at.is_(None))
                    if len(session.scalars(waiting.limit(w.batch)).all()) >= w.batch:
                        wakeups.send(spread + 1)
            until = time.monotonic() + drain_time
            handled = w.drain(until=until)
            if time.monotonic() >= until:
                wakeups.send(spread)
        finally:
            with lock:
                idle.append(w)
        return handled

    # A prefork pool's process must not use the connections of the one it forked from.
    worker_process_init.connect(lambda **_: st.db.engine.dispose(close=False), weak=False)
    # The worker's logging, set up after the app was built, prints srcore's records too.
    after_setup_logger.connect(yield_to_host, weak=False)
    after_setup_logger.connect(offset_celery_times, weak=False)
    after_setup_task_logger.connect(offset_celery_times, weak=False)
    celeryd_init.connect(functools.partial(_worker_starts, celery_app, st.service_id), weak=False)
    celery_app.task(name=DRAIN, ignore_result=True, shared=False)(drain)
    celery_app.webhook_wakeups = wakeups
    return celery_app


def _worker_starts(
    celery_app: Celery, service_id: str, *, instance: Any, options: Mapping[str, Any], **_: Any
) -> None:
    """``celery worker`` with *celery_app*, before it checks its privileges and forks.

    Under a uid with no group entry (``docker run --user 4242``) Celery assumes the worker
    runs as root and warns at length that it does, which is not so: those two warnings are
    left out when neither the uid nor the effective one is 0 and only JSON is accepted (the
    case Celery would refuse, pickle, stays its own). A prefork pool that would fail as it
    starts (no temporary directory, no semaphore) is refused in one line, not a traceback.
    """
    conf: Any = celery_app.conf
    if getattr(instance, "app", None) is not celery_app:
        return
    accepted = {str(kind) for kind in conf.accept_content or ()}
    if 0 not in (os.getuid(), os.geteuid()) and accepted <= {"json", "application/json"}:
        from celery.exceptions import SecurityWarning

        for said in ("An entry for the specified gid", "You're running the worker with superuser"):
            warnings.filterwarnings("ignore", message=said, category=SecurityWarning)
    pool = options.get("pool_cls") or options.get("pool") or conf.worker_pool
    try:
        from celery.concurrency import get_implementation

        name = getattr(get_implementation(pool), "__module__", "")
    except Exception:  # Celery names an unknown pool itself
        return
    if name.endswith(".prefork") and (problem := _prefork_problem()) is not None:
        raise SystemExit(
            f"celery worker ({queue_name(service_id)}): {problem}, or run it with --pool threads"
        )


def _prefork_problem() -> str | None:
    """What a prefork pool lacks on this host, in one line: a temporary directory for its
    shared memory, and a semaphore (``sem_open``: ``/dev/shm`` on Linux) to share it."""
    if (problem := temporary_directory_problem()) is not None:
        return f"{problem}; the prefork pool keeps its shared memory there"
    import multiprocessing  # its semaphores are made as billiard's are

    try:
        multiprocessing.Lock()
    except OSError as exc:
        return (
            f"the prefork pool cannot make a semaphore ({exc.strerror or exc}): this user "
            f"(uid {os.getuid()}) needs to write in /dev/shm"
        )
    return None


class CeleryDispatcher:
    """A commit queues a ``drain``. Built without IO: the Celery app at the first nudge."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CeleryDispatcher {self.app.extensions['srcore'].service_id}>"

    def nudge(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        try:
            with self._lock:
                self._celery = self._celery or make_celery(self.app)
            self._celery.webhook_wakeups.after_commit()
        except Exception as exc:  # beat's next drain finds them; a traceback at debug level
            tb = log.isEnabledFor(logging.DEBUG)  # an outage logs once per commit: one line
            why = f"{type(exc).__name__}: {exc}"
            log.error("could not nudge the webhook dispatcher: %s", why, exc_info=tb)


class NoServiceError(RuntimeError, AttributeError):  # hasattr(module, "app") is False
    """``SRCORE_SERVICE`` is not set."""


def default_app(environ: Mapping[str, str] | None = None) -> Celery:
    """The Celery app of ``SRCORE_SERVICE`` (an installed service's id, or its package) with
    ``SRCORE_CONFIG``: ``celery -A srcore.webhooks.celery``'s, built once per process."""
    env = os.environ if environ is None else environ
    service = env.get("SRCORE_SERVICE", "").strip()
    if not service:
        raise NoServiceError(
            "Set SRCORE_SERVICE to the service whose webhooks this worker delivers "
            "(e.g. SRCORE_SERVICE=todo), and SRCORE_CONFIG to its config file"
        )
    return _service_celery(service, env.get("SRCORE_CONFIG") or None)


@functools.cache
def _service_celery(service: str, config: str | None) -> Celery:
    with contextlib.suppress(ManifestError):  # not an installed id: a package
        service = service_package(service)
    return make_celery(importlib.import_module(service).create_app(config=config))


class _AsWritten(str):
    """A message Celery's command line prints as written: it capitalizes an
    ``AttributeError``'s text, which lowercased ``SRCORE_SERVICE`` and ``SRCORE_CONFIG``
    (variables whose case matters) in what it told the operator to set."""

    def capitalize(self) -> str:
        return str(self)


class _AppUnavailable(AttributeError):
    """``celery -A srcore.webhooks.celery`` found no app to run: the service is not
    named, not installed, or its config cannot be used (the reason, as Celery prints it)."""


def __getattr__(name: str) -> Any:
    # `celery -A srcore.webhooks.celery` reads the module's `app`: built only then. What
    # keeps it from being built is an AttributeError, which Celery prints in one message
    # ("Unable to load celery application."); any other exception it prints with its
    # traceback.
    if name in ("app", "celery"):
        from srcore.config import ConfigError

        service = os.environ.get("SRCORE_SERVICE", "").strip()
        try:
            return default_app()
        except ModuleNotFoundError as exc:
            if exc.name != service and exc.name != service.split(".")[0]:
                raise
            why = f"SRCORE_SERVICE={service} is neither an installed service nor a package"
            raise _AppUnavailable(_AsWritten(why)) from exc
        except (AttributeError, ConfigError, ManifestError, MissingExtraError, ValueError) as exc:
            raise _AppUnavailable(_AsWritten(str(exc))) from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
