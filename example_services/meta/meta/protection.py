"""Brute-force protection and rate limits of meta's login, registration and reset forms.

Two layers:

* :mod:`srcore.throttle` counts *failed password checks* (the login form, and the forms
  that ask for the current password) per account and per client address,
  with growing delays and a lockout (``[meta] login-max-failures``, ``login-lockout``); the
  address limit is ``IP_FAILURE_FACTOR`` times looser, since many people can share one;
* Flask-Limiter caps *every* POST to ``/login``, ``/register``, ``/forgot`` and the forms
  asking for the current password per client address (:data:`RATE_LIMITS`), whatever its
  outcome, so nobody can hammer the forms or flood mailboxes.

Both count a client by :func:`srcore.ratelimit.client_address`: an IPv6 address by its /64,
which one subscriber holds whole (2^64 addresses, each otherwise a fresh allowance).

An account is counted under one key whether it is named by its username or its address
(the views pass ``user:<id>``; a name no account has is counted as typed).

The second step of a login (a code, a recovery code, a passkey after the password) has a
counter of its own per account besides those two, which only a second factor that checks
out clears: a right password clears the account's password counter, and if it cleared
the codes' too, whoever has the password could guess codes without end, logging in again
between each few guesses (from new addresses once one is locked).

Both use Redis when ``[global] redis-url`` is set, so every worker counts together, and
process memory otherwise.

srcore's write rate limits (``[global] write-rate-limit``) count meta's other writes per
account like any service's; :data:`UNCOUNTED_WRITES` are left to the limits above or must
never be refused by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from srcore.limiter_storage import WindowsStorage
from srcore.throttle import Decision, Store, Throttle, ThrottleKey, make_store

if TYPE_CHECKING:
    from flask import Flask
    from flask_limiter import Limiter

__all__ = [
    "IP_FAILURE_FACTOR",
    "MAILS_PER_ACCOUNT",
    "RATE_LIMITS",
    "UNCOUNTED_WRITES",
    "AccountCounter",
    "LoginProtection",
    "init_app",
]

#: The per-address failure limit is this many times the per-account one.
IP_FAILURE_FACTOR = 4

#: Per-address limits on POSTs, whatever their outcome.
RATE_LIMITS = {
    "login": "20 per minute",
    "register": "10 per hour",
    "forgot": "5 per 15 minutes",
    # Each sends a mail to the account's address, which an unconfirmed account may have
    # typed for anyone: no mailbox is flooded through it.
    "resend": "5 per 15 minutes",
    "current-password": "20 per minute",
}

#: Mails an outsider can make meta send to an account, at most (this many, per this many
#: seconds) per account, whatever addresses ask: the per-address limits alone let anyone
#: with many addresses fill a mailbox. Beyond it the form answers the same, and sends nothing.
MAILS_PER_ACCOUNT = {"reset": (3, 900)}

#: Endpoints srcore's write rate limits leave alone: the forms :data:`RATE_LIMITS` govern
#: per address (counted twice, an office behind one address would be locked out of
#: logging in sooner than these limits say), the OAuth endpoints services and clients
#: call (client authentication has its own throttle), and logging out.
UNCOUNTED_WRITES = (
    "accounts.login",
    "accounts.register",
    "accounts.forgot",
    "accounts.resend_confirmation",
    "accounts.password",
    "accounts.change_email",
    "accounts.delete_account",
    "twofactor.verify",
    "twofactor.enable",
    "twofactor.disable",
    "twofactor.renew_recovery_codes",
    "passkeys.login_options",
    "passkeys.login",
    "passkeys.second_step_options",
    "passkeys.second_step",
    "passkeys.reset_options",
    "passkeys.reset_second_factor",
    "passkeys.register_options",
    "passkeys.register",
    "passkeys.remove",
    "oauth.token",
    "oauth.revoke",
    "oauth.introspect",
    "oidc.userinfo",
    "oidc.end_session",
    "accounts.logout",
    "accounts.logout_everywhere",
)


@dataclass
class LoginProtection:
    """The two login throttles: by the name typed in, and by the client's address."""

    account: Throttle
    address: Throttle

    @classmethod
    def build(
        cls, store: Store, *, max_failures: int, lockout: timedelta, **options: Any
    ) -> LoginProtection:
        return cls(
            account=Throttle(
                store, max_failures=max_failures, lockout=lockout, prefix="meta:login", **options
            ),
            address=Throttle(
                store,
                max_failures=max_failures * IP_FAILURE_FACTOR,
                free_failures=3 * IP_FAILURE_FACTOR,
                lockout=lockout,
                prefix="meta:login",
                **options,
            ),
        )

    @staticmethod
    def _account_keys(
        account: str | AccountCounter, second_factor: bool, *, every: bool = False
    ) -> list[ThrottleKey]:
        # *account* is the caller's key for the account (its id, or the name as typed when
        # no account has it): counted the same way whether or not the account exists.
        counter = account if isinstance(account, AccountCounter) else AccountCounter(account)
        names = (counter.own, *counter.also) if every else (counter.own,)
        keys: list[ThrottleKey] = []
        for raw in names:
            name = raw.strip().lower()[:300]
            keys.append(("account", name))
            if second_factor:
                keys.append(("second-factor", name))
        return keys

    def check(
        self, login: str | AccountCounter, address: str, *, second_factor: bool = False
    ) -> Decision:
        """Whether *login* may be tried from *address* now; with *second_factor*, the
        second step's own counter of the account is asked too.

        In a request, an attempt that may go ahead holds the turn of the account's counter
        until its failure or success is counted (or the request ends): another attempt of
        the account meanwhile is refused for a moment. Checked and counted apart, attempts
        sent at once all passed the check before the first was counted, as many guesses
        per lockout as the server takes requests at once. The address's counter takes no
        turns: many people share an address, and its POSTs are capped per minute anyway.
        """
        keys = self._account_keys(login, second_factor)
        held = _turns()
        taken: list[ThrottleKey] = []
        if held is not None:
            taken = [key for key in keys if key not in held]
            turn = self.account.take_turn(taken)
            if not turn.allowed:
                return turn
            held.update(taken)
        first = self.account.check(keys)
        second = self.address.check([("ip", address)])
        if first.allowed and second.allowed:
            return first
        self._end_turns(taken)
        return Decision(False, max(first.retry_after, second.retry_after))

    def _end_turns(self, keys: list[ThrottleKey]) -> None:
        held = _turns()
        if held:
            mine = [key for key in keys if key in held]
            self.account.end_turn(mine)
            held.difference_update(mine)

    def end_turns(self) -> None:
        """Give back the turns this request's checks still hold (when it ends)."""
        held = _turns()
        if held:
            self._end_turns(list(held))

    def failure(
        self, login: str | AccountCounter, address: str, *, second_factor: bool = False
    ) -> None:
        """Count a failure of *login* from *address* (on each of its counters): a wrong
        second factor (with *second_factor*) counts on the second step's counter as well.
        The attempt's turn ends once it is counted."""
        self.account.failure(self._account_keys(login, second_factor, every=True))
        self.address.failure([("ip", address)])
        self._end_turns(self._account_keys(login, second_factor))

    def mail_allowed(self, kind: str, user_id: int) -> bool:
        """Whether mail *kind* (of :data:`MAILS_PER_ACCOUNT`) may go to *user_id* now; if
        so, it is counted."""
        limit, seconds = MAILS_PER_ACCOUNT[kind]
        return self.account.store.acquire_entry(f"meta:mails:{kind}:{user_id}", limit, seconds)

    def success(
        self, login: str | AccountCounter, address: str, *, second_factor: bool = False
    ) -> None:
        """Forget the failures of *login*'s own counter: the password's, and with
        *second_factor* (a second factor checked out) the second step's too.

        Never the address's counter: a success must not wipe the failures others made
        from the same address.
        """
        self.account.success(self._account_keys(login, second_factor))
        self._end_turns(self._account_keys(login, second_factor))


#: ``flask.g`` key: the account counters whose turn this request holds.
_TURNS_KEY = "_meta_login_turns"


def _turns() -> set[ThrottleKey] | None:
    """The account counters whose turn the current request holds; None outside a request
    (a command, a test calling the throttle alone: no turns are taken)."""
    from flask import g, has_request_context

    if not has_request_context():
        return None
    held: set[ThrottleKey] | None = g.get(_TURNS_KEY)
    if held is None:
        held = set()
        setattr(g, _TURNS_KEY, held)
    return held


@dataclass(frozen=True)
class AccountCounter:
    """The counters an attempt concerning an account goes on: *own* decides whether it may
    go ahead and is cleared by a success; a failure counts on *also* too.

    A browser the account logged in from before has its own counter (*own*), so strangers
    failing the account's logins do not lock out its owner there; its failures still count
    on the account's (*also*), so a copy of that browser's cookies buys no extra guesses
    anywhere else.
    """

    own: str
    also: tuple[str, ...] = ()


def init_app(app: Flask) -> Limiter:
    """Build the login throttles and the rate limiter of *app*; return the limiter."""
    from flask_limiter import Limiter

    from meta.settings import meta_settings
    from srcore.app import state
    from srcore.ratelimit import client_address

    st = state(app)
    redis_url = str(st.config.global_.get("redis-url") or "")
    settings = meta_settings(app)
    protection = LoginProtection.build(
        make_store(redis_url),
        max_failures=settings.login_max_failures,
        lockout=settings.login_lockout,
    )
    app.extensions["meta"].protection = protection

    @app.teardown_request
    def _end_turns(_exc: BaseException | None) -> None:
        # The protection the app has now: tests replace it.
        current = app.extensions["meta"].protection
        if current is not None:
            current.end_turns()

    limiter = Limiter(
        client_address,
        app=app,
        # srcore's moving windows (srcore.limiter_storage.WindowsStorage): in Redis, or in process,
        # each hit touching its own key. limits' memory storage, Flask-Limiter's own for
        # "memory://" and for its in-memory fallback, walks every key it holds after each
        # hit: with many addresses every POST of everyone would cost CPU in proportion.
        # While Redis is away each process counts on its own, rather than erring on every
        # limited request, and goes back to Redis once it answers.
        storage_uri=f"{WindowsStorage.STORAGE_SCHEME[0]}://",
        storage_options={"redis_url": redis_url, "timeout": 2},
        strategy="moving-window",
        default_limits=[],
        # Not the "-limits" of the fixed windows once kept: in Redis those keys hold counters,
        # not the lists a moving window keeps.
        key_prefix=f"{st.service_id}-windows",
    )
    _answer_429(app, limiter)
    from srcore.ratelimit import exempt_endpoints

    exempt_endpoints(app, *UNCOUNTED_WRITES)
    return limiter


def _answer_429(app: Flask, limiter: Limiter) -> None:
    """Answer a rate limit with the standard error page or body, and a ``Retry-After``."""
    import time

    from flask_limiter import RateLimitExceeded

    from srcore.errors import error_response

    def too_many(exc: RateLimitExceeded) -> Any:
        current = limiter.current_limit
        wait = max(1, int(current.reset_at - time.time())) if current is not None else 60
        return error_response(
            429,
            "Too many attempts from your address. Wait a moment and try again.",
            headers={"Retry-After": str(wait)},
        )

    app.register_error_handler(RateLimitExceeded, too_many)
