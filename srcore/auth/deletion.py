"""Account deletion: what a service does when meta says an account is gone for good.

meta sends a ``delete`` event (:mod:`srcore.identity.protocol`) in the transaction that
deletes the account, pushed and pulled as every revocation is. The revocation store then
refuses the account's tokens and sessions for good; this module, a listener of those
events (:func:`srcore.auth.revocation.on_revocations`), drops the service's own copy of
the account and calls the hooks the service registered with :func:`on_account_deleted`.

For each deleted account, in one transaction of the service's database: the hooks run
(with the user row as it still is), the account's webhook subscriptions at this service
go, then the user row keeps only its id, a placeholder username (``~<id>``) and the
``deleted`` type. That type marks the deletion as applied:
the same event arriving again (pushed and pulled, by every process, read again from the
start of meta's list when a process starts) finds it and runs nothing. A hook that
raises rolls it all back, so nothing is marked: the deletion is tried again after a pause
growing from :attr:`DeletionState.first_retry` to :attr:`DeletionState.max_retry`
seconds, and at the latest when a process of the service starts and reads meta's list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from srcore.forks import reset_in_child
from srcore.identity.protocol import DELETION_KINDS, RevocationEvent

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

__all__ = [
    "EXTENSION_KEY",
    "DeletionHook",
    "DeletionState",
    "apply_deletions",
    "hold_account",
    "init_app",
    "on_account_deleted",
]

log = logging.getLogger("srcore.auth")

#: Called as ``hook(session, user)`` inside the deletion's transaction: *user* is the
#: service's user row, its profile not dropped yet. It deletes or keeps what the account
#: owned here, through *session* (never committing it); raising rolls the deletion back
#: and it is tried again later.
DeletionHook = Callable[["Session", Any], None]

#: Where an app keeps its :class:`DeletionState`.
EXTENSION_KEY = "srcore.deletion"


@dataclass
class DeletionState:
    """One app's deletion hooks and the deletions waiting to be tried again."""

    app: Flask
    hooks: list[DeletionHook] = field(default_factory=list)
    #: Seconds before the first retry of a failed deletion; doubled up to max_retry.
    first_retry: float = 1.0
    max_retry: float = 300.0
    #: The user ids whose deletion failed and is due again.
    pending: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        reset_in_child(self._forked)

    def _forked(self) -> None:
        """In a forked child: the parent's lock may be held for good, its thread is gone."""
        self._lock = threading.Lock()
        self._thread = None

    def retry_later(self, user_ids: Iterable[int]) -> None:
        """Try these deletions again from a thread of their own, until they all succeed."""
        with self._lock:
            self.pending.update(user_ids)
            if not self.pending or (self._thread is not None and self._thread.is_alive()):
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="srcore-account-deletion", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop retrying in this process (tests; the process exiting stops it too)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, stop: threading.Event) -> None:
        delay = self.first_retry
        while not stop.wait(delay):
            with self._lock:
                due = sorted(self.pending)
                self.pending.clear()
            if not due:
                break
            failed = apply_deletions(self.app, due)
            with self._lock:
                self.pending.update(failed)
                if not self.pending:
                    self._thread = None
                    return
            delay = min(delay * 2, self.max_retry)
        with self._lock:
            self._thread = None


def on_account_deleted(app: Flask, hook: DeletionHook) -> None:
    """Call *hook* once for each account meta deletes, inside the transaction that drops
    this service's copy of it (see :data:`DeletionHook`).

    Hooks run in the order registered, at most once per deletion (whichever of meta's
    push and the pull brings it first), and again after a failure until one run commits.
    Raises RuntimeError for an app that keeps no user table: it has nothing to drop. An
    app that does not log in through meta keeps the hook and hears of no deletion.
    """
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, DeletionState):
        raise RuntimeError(
            "account deletions reach only a service that keeps a user table "
            "(create_app(..., user_model=...))"
        )
    state.hooks.append(hook)


def hold_account(session: Session, user: Any) -> None:
    """Hold *user*'s row (the service's user model) until *session*'s transaction ends,
    and refuse with a 403 an account deleted or suspended since the request read it.

    Call it in a write that makes something the account owns, before it is added. The
    request checked its token or cookie and read the user row at its start; a deletion
    applied between then and the write ran the hooks (which drop what the account owns)
    before the new thing existed, so it stayed for good. The deletion holds the same row
    (:func:`srcore.sqlrows.lock_row` says how, on both databases): one of the two waits
    for the other, and either the hooks see the new thing or the write sees the deletion.
    """
    from flask import abort

    from srcore.sqlrows import lock_row

    if not lock_row(session, user) or user.is_suspended:
        abort(403, "This account was deleted or suspended; nothing was saved.")


def init_app(app: Flask) -> None:
    """Keep *app*'s deletion hooks (an app with a user model), and follow meta's ``delete``
    events when it logs in through meta. One that does not (built with its own token
    verifier, as in tests) keeps the hooks registered and hears of no deletion."""
    from srcore.auth.revocation.state import EXTENSION_KEY as REVOCATION_KEY
    from srcore.auth.revocation.state import on_revocations

    if app.extensions["srcore"].user_model is None:
        return
    state = DeletionState(app)
    app.extensions[EXTENSION_KEY] = state
    if REVOCATION_KEY in app.extensions:
        on_revocations(app, partial(_after_revocations, state))


def _user_ids(events: Sequence[RevocationEvent]) -> list[int]:
    """The user ids the ``delete`` events among *events* name (odd subjects skipped)."""
    from srcore.routing import ID_MAX

    found = set()
    for event in events:
        subject = event.subject
        if event.kind not in DELETION_KINDS or not (subject.isascii() and subject.isdecimal()):
            continue
        if 0 < (user_id := int(subject)) <= ID_MAX:
            found.add(user_id)
    return sorted(found)


def _after_revocations(state: DeletionState, events: list[RevocationEvent]) -> None:
    user_ids = _user_ids(events)
    if user_ids:
        state.retry_later(apply_deletions(state.app, user_ids))


def apply_deletions(app: Flask, user_ids: Sequence[int]) -> list[int]:
    """Apply the deletion of each of *user_ids* not applied yet; return those that failed
    (logged), to be tried again."""
    from sqlalchemy import select

    from srcore.db import UserType

    st = app.extensions["srcore"]
    model = st.user_model
    failed: list[int] = []
    with app.app_context():
        with st.db.session() as session:
            gone = model.id.in_(user_ids), model.user_type == UserType.deleted
            done = set(session.scalars(select(model.id).where(*gone)))
        for user_id in [u for u in user_ids if u not in done]:
            try:
                _apply_one(app, user_id)
            except Exception:
                log.exception(
                    "dropping deleted account %s failed; it is tried again later", user_id
                )
                failed.append(user_id)
    return failed


def _drop_subscriptions(session: Session, user_id: int) -> None:
    """Delete the webhook subscriptions *user_id* owns at this service, with their pending
    deliveries and log (the database cascades): receiver URLs and secrets of a person who
    is gone, whom nobody can tell or ask to enable them again. A service's own
    subscriptions (``trusted``) are no account's. Named as a table, not through
    :mod:`srcore.webhooks`, which sits above auth."""
    from sqlalchemy import column, delete, false, table

    subscriptions = table("srcore_webhook_subscription", column("owner_id"), column("trusted"))
    theirs = subscriptions.c.owner_id == user_id, subscriptions.c.trusted == false()
    session.execute(delete(subscriptions).where(*theirs))


def _apply_one(app: Flask, user_id: int) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError

    from srcore.db import UserType

    st = app.extensions["srcore"]
    model = st.user_model
    state: DeletionState = app.extensions[EXTENSION_KEY]
    for attempt in range(2):
        try:
            with st.db.transaction() as session:
                if session.get_bind().dialect.name == "sqlite":
                    # SQLite's one write lock before anything is read: two processes
                    # applying the same deletion then take turns, and the second finds it done.
                    hold = update(model).where(model.id == user_id)
                    session.execute(hold.values(user_type=model.user_type))
                user = session.get(model, user_id, with_for_update=True, populate_existing=True)
                if user is not None and user.user_type == UserType.deleted:
                    return
                if user is None:
                    # Never seen here: the mark alone, so nothing of it is kept if it shows up.
                    user = model(id=user_id, username=f"~{user_id}", email="")
                    session.add(user)
                    session.flush()
                for hook in state.hooks:
                    hook(session, user)
                if "srcore.webhooks" in app.extensions:
                    _drop_subscriptions(session, user_id)
                user.username, user.email = f"~{user_id}", ""
                user.url = user.location = user.bio = user.suspension_notice = None
                user.user_type = UserType.deleted
            log.info("account %s was deleted at meta: its data here is dropped", user_id)
            return
        except IntegrityError:
            if attempt:
                raise
            # Another process made the row meanwhile: read it again.
