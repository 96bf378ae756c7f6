"""The keys srcore itself declares: :data:`GLOBAL_KEYS` and :data:`SERVICE_KEYS`.

Kept apart from the machinery so the list reads as the operator's reference: every key
srcore understands, with its type, default and help, in one place. The small checks above
it are the rules of single keys beyond their type; rules that span keys or services live
in the loader.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from srcore.config.database import check_database_url
from srcore.config.keys import Key, _did_you_mean, format_duration, parse_duration
from srcore.config.ports import allows_any, parse_ports

__all__ = [
    "GLOBAL_KEYS",
    "LONGEST_POLL_INTERVAL",
    "MAX_TRUSTED_HOPS",
    "MAX_WEBHOOK_TIMEOUT",
    "MAX_WEBHOOK_WORKERS",
    "MIN_SECRET_KEY_LENGTH",
    "SERVICE_KEYS",
    "SHORTEST_POLL_INTERVAL",
    "within",
]

#: A ``secret-key`` shorter than this is refused.
MIN_SECRET_KEY_LENGTH = 32

#: The longest ``webhook-timeout``. A worker claims a delivery for a lease of five minutes
#: and starts a request only while it can end before the lease does; half the lease leaves
#: a lane room to send more than one. (A test holds it to the worker's lease.)
MAX_WEBHOOK_TIMEOUT = timedelta(minutes=2)
#: The longest delay of ``webhook-retry-schedule``: a retry further off is a typo.
MAX_RETRY_DELAY = timedelta(days=30)
#: The most attempts ``webhook-retry-schedule`` may make of one delivery.
MAX_ATTEMPTS = 100
#: The longest ``webhook-log-retention`` and ``webhook-disable-after``, ten years: longer
#: is a typo, and far longer (millions of days) has the worker compute dates before year 1.
LONGEST_KEPT = timedelta(days=3650)
#: The most requests or Celery tasks a webhook worker setting may ask for at once; also
#: the most ``srcore worker --concurrency`` takes.
MAX_WEBHOOK_WORKERS = 1024
#: The range of ``webhook-poll-interval``, and of ``srcore worker --poll-interval`` that
#: overrides it: polling more often keeps the database busy, less often delays new events.
SHORTEST_POLL_INTERVAL = timedelta(milliseconds=100)
LONGEST_POLL_INTERVAL = timedelta(minutes=10)
#: The range of ``http-timeout``: none at all fails every call to meta, and a page waiting
#: longer than a minute on it holds a web worker that long (gunicorn's own timeout is 30s).
SHORTEST_HTTP_TIMEOUT = timedelta(milliseconds=100)
LONGEST_HTTP_TIMEOUT = timedelta(minutes=1)
#: The range of ``database-statement-timeout``: shorter fails ordinary pages on a busy
#: database; longer than an hour bounds nothing a person waits for.
SHORTEST_STATEMENT_TIMEOUT = timedelta(milliseconds=100)
LONGEST_STATEMENT_TIMEOUT = timedelta(hours=1)
#: The range of ``revocation-pull-interval`` besides 0s (push only).
SHORTEST_PULL = timedelta(seconds=1)
LONGEST_PULL = timedelta(days=1)
#: The most ``proxy-fix-trusted-hops``: a CDN's edge and shield, a load balancer and a
#: local nginx make four, one more leaves room for a sidecar. A larger number is a slip
#: (``11`` for ``1``), and a dangerous one: each hop believed beyond the real proxies is an
#: ``X-Forwarded-For`` entry the client writes itself, its address to the rate limits,
#: the logs and the audit trail.
MAX_TRUSTED_HOPS = 5


def _at_least(minimum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, int) and value < minimum:
            return f"must be at least {minimum}, not {value}"
        return None

    return check


def _between(minimum: int, maximum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, int) and not minimum <= value <= maximum:
            return f"must be between {minimum} and {maximum}, not {value}"
        return None

    return check


def _lasting(
    shortest: timedelta, longest: timedelta, *, too_short: str = "", too_long: str = ""
) -> Callable[[object], str | None]:
    """A duration between *shortest* and *longest*; *too_short* and *too_long* say why."""

    def check(value: object) -> str | None:
        if not isinstance(value, timedelta) or shortest <= value <= longest:
            return None
        low, high = format_duration(shortest), format_duration(longest)
        why = too_short if value < shortest else too_long
        message = f"must be between {low} and {high}, not {format_duration(value)}"
        return f"{message}: {why}" if why else message

    return check


def within(low: int | timedelta, high: int | timedelta) -> Callable[[object], str | None]:
    """The check of a whole number or duration key that must lie between *low* and *high*
    (both included): what a service declares with ``min`` and ``max`` in its manifest."""
    if isinstance(low, timedelta) and isinstance(high, timedelta):
        return _lasting(low, high)
    if isinstance(low, int) and isinstance(high, int):
        return _between(low, high)
    raise TypeError("the bounds are two whole numbers or two durations")


def _pull_interval(value: object) -> str | None:
    """0s (no pulling at all), or a pause between pulls that neither keeps every process
    of every service asking meta all the time nor lets a lost push stay lost for days."""
    if not isinstance(value, timedelta) or not value or SHORTEST_PULL <= value <= LONGEST_PULL:
        return None
    low, high = format_duration(SHORTEST_PULL), format_duration(LONGEST_PULL)
    return f"must be 0s (push only) or between {low} and {high}, not {format_duration(value)}"


def _durations(value: object) -> str | None:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        return "needs at least one delay (the first attempt's, usually 0s)"
    if len(items) > MAX_ATTEMPTS:
        return f"{len(items)} delays, at most {MAX_ATTEMPTS}: each is one attempt of a delivery"
    delays = []
    for item in items:
        try:
            delays.append(parse_duration(str(item)))
        except ValueError as exc:
            return str(exc)
    longest = max(delays)
    if longest > MAX_RETRY_DELAY:
        limit = format_duration(MAX_RETRY_DELAY)
        return f"a delay of {format_duration(longest)} is longer than {limit}, the longest"
    for earlier, later in itertools.pairwise(delays):
        if later < earlier:
            return (
                f"the delays must not get shorter, but {format_duration(earlier)} is followed by "
                f"{format_duration(later)}: each retry waits at least as long as the one before"
            )
    return None


def _port(value: object) -> str | None:
    if isinstance(value, int) and not 1 <= value <= 65535:
        return f"not a TCP port: {value} (1-65535)"
    return None


def _origin(value: object) -> str | None:
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https"):
        return f"an origin is http:// or https://, not {parts.scheme}://"
    if parts.path or parts.query or parts.fragment:
        return (
            f"an origin is scheme://host[:port] with no path: use "
            f"{parts.scheme}://{parts.netloc} (as the browser's address bar shows it)"
        )
    return None


def _client_id(value: object) -> str | None:
    """A client's id is its tokens' ``sub`` when it acts for itself, beside users' ids
    there: one spelled as an account id (digits only) would make its tokens read as that
    account's, and that account's tokens through it as the client's own."""
    text = str(value)
    if text.isascii() and text.isdigit():
        return (
            "must not be digits only: a token's sub is an account id or a client id, and "
            "this one reads as an account id"
        )
    return None


def _redis_url(value: object) -> str | None:
    scheme = urlsplit(str(value)).scheme
    if scheme not in ("redis", "rediss", "unix"):
        return f"a Redis URL starts with redis://, rediss:// or unix://, not {scheme}://"
    return _redis_database(str(value))


def _redis_database(url: str) -> str | None:
    """The database of a ``redis://`` broker URL is its path, a number; Celery would refuse
    any other only when a commit first wakes the workers, in the middle of a request."""
    parts = urlsplit(url)
    number = parts.path.strip("/")
    if parts.scheme not in ("redis", "rediss") or not number:
        return None
    if "@" in number:  # never quoted: it holds part of the password
        return "an '@' follows the host: percent-encode the password's '/' (%2F) and '@' (%40)"
    if not (number.isascii() and number.isdigit()):
        return f"the database of a Redis URL is a number, like redis://host:6379/1, not {number!r}"
    return None


def _celery_transports() -> frozenset[str] | None:
    """The URL schemes Celery's transport library knows; None when it is not installed
    (a broker then cannot be used at all, which the app says when it is built)."""
    try:
        from kombu.transport import TRANSPORT_ALIASES
    except ImportError:
        return None
    return frozenset(name.lower() for name in TRANSPORT_ALIASES)


def _broker_url(value: object) -> str | None:
    scheme = urlsplit(str(value)).scheme.lower()
    transport = scheme.partition("+")[0]  # sqla+postgresql://: the sqla transport
    known = _celery_transports()
    if known is not None and transport not in known:
        usual = ("redis", "rediss", "amqp", "amqps")
        hint = _did_you_mean(transport, sorted(known))
        return (
            f"no Celery broker speaks {scheme}://: use {', '.join(f'{s}://' for s in usual)} "
            "or another Celery transport" + (f"; {hint}" if hint else "")
        )
    return _redis_database(str(value))


def _secret_key(value: object) -> str | None:
    if isinstance(value, str) and len(value) < MIN_SECRET_KEY_LENGTH:
        return (
            f"too short ({len(value)} characters, at least {MIN_SECRET_KEY_LENGTH}): "
            "run `srcore keygen` for a fresh one"
        )
    return None


def _networks(value: object) -> str | None:
    bad = []
    for item in value if isinstance(value, tuple) else ():
        try:
            ipaddress.ip_network(str(item))
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        return "not a network in CIDR form (like 10.0.0.0/8 or fd00::/8): " + "; ".join(bad)
    return None


#: The default of ``webhook-allowed-ports``: the web's ports and the unprivileged range,
#: minus the ports of well-known internal services (databases, caches, brokers, cluster
#: control planes) that a forged request could talk to.
DEFAULT_WEBHOOK_PORTS: tuple[str, ...] = (
    "80",
    "443",
    "1024-65535",
    "!1433",  # SQL Server
    "!1521",  # Oracle
    "!2049",  # NFS
    "!2375-2380",  # Docker API, etcd
    "!3306",  # MySQL
    "!4369",  # Erlang port mapper
    "!5432",  # PostgreSQL
    "!5672",  # AMQP
    "!5984",  # CouchDB
    "!6379",  # Redis
    "!6443",  # Kubernetes API
    "!8500",  # Consul
    "!9042",  # Cassandra
    "!9200",  # Elasticsearch
    "!9300",
    "!10250",  # kubelet
    "!11211",  # memcached
    "!15672",  # RabbitMQ management
    "!27017-27019",  # MongoDB
)


def _ports(value: object) -> str | None:
    try:
        allowed, denied = parse_ports(
            str(item) for item in (value if isinstance(value, tuple) else ())
        )
    except ValueError as exc:
        return f"not a port list (like 80, 443, 1024-65535, !6379): {exc}"
    if not allows_any(allowed, denied):
        return (
            "allows no port, so every webhook would be refused: list the ports allowed "
            "(like 443, 1024-65535) before those excluded with !"
        )
    return None


def _url_path(value: object) -> str | None:
    if isinstance(value, str) and value and not value.startswith("/"):
        return f"must be a path starting with '/', like /metrics, not {value!r}"
    return None


#: Paths every service answers itself (srcore's own pages and the services' API): metrics
#: served at one of them would hide that page, with nothing said.
_TAKEN_PATHS = ("/healthz", "/static", "/api", "/oauth", "/webhooks", "/_srcore", "/.well-known")


#: Characters a path as served may not hold: the route would never match (a scraper's
#: ``/metrics?x`` asks for /metrics; ``%2F`` is decoded before routing) or would read as a
#: placeholder (``/<name>``), failing every scrape with a 500.
_NOT_IN_A_ROUTE = frozenset("?#%<>")


def _metrics_path(value: object) -> str | None:
    problem = _url_path(value)
    if problem is not None or not isinstance(value, str) or not value:
        return problem
    odd = next((c for c in value if c in _NOT_IN_A_ROUTE), None)
    if odd is not None:
        return (
            f"{value!r} has {odd!r}, which no request path matches as written (it starts a "
            "query, a fragment, an escape or a route placeholder): use a plain path, like "
            "/metrics"
        )
    path = "/" + value.strip("/")
    if path == "/":
        return "must not be / (the service's front page): use a path such as /metrics"
    taken = next((t for t in _TAKEN_PATHS if path == t or path.startswith(t + "/")), None)
    if taken is not None:
        return f"{value!r} is under {taken}, which every service answers itself: use /metrics"
    return None


def _trusted_hops(value: object) -> str | None:
    """0 to :data:`MAX_TRUSTED_HOPS`: a larger count believes entries the client wrote
    itself, and no deployment has that many proxies appending to X-Forwarded-For."""
    if not isinstance(value, int) or 0 <= value <= MAX_TRUSTED_HOPS:
        return None
    if value < 0:
        return f"must be at least 0, not {value}"
    return (
        f"must be at most {MAX_TRUSTED_HOPS}, not {value}: it is the number of reverse "
        "proxies in front of the service, and each one believed beyond the real ones lets "
        "any client forge its address with an X-Forwarded-For of its own"
    )


def _mail_address(value: object) -> str | None:
    """One address, as a From header reads it: anything else broke each mail when it was
    built (``x@`` raised from the mail library) or sent it from a mangled address."""
    if not isinstance(value, str):
        return None
    from email.message import EmailMessage

    try:
        message = EmailMessage()
        message["From"] = value
        header = message["From"]
        addresses = header.addresses
        one = len(addresses) == 1 and addresses[0].username and addresses[0].domain
        fine = bool(one) and not header.defects
    except (ValueError, IndexError, TypeError):  # what the parser raises on nonsense
        fine = False
    if fine:
        return None
    return (
        f"not a mail address: {value!r} (e.g. noreply@example.org or Example <noreply@example.org>)"
    )


def _host_name(value: object) -> str | None:
    """A host name or IP address alone: its port is a key of its own, and the scheme too."""
    if not isinstance(value, str) or not value:
        return None
    if "://" in value:
        return f"a host name alone, not a URL: {value!r} (smtp-tls says how to connect)"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if ":" in value:
        return f"a host name alone: put the port in smtp-port, not in {value!r}"
    if not re.fullmatch(r"[\w.-]+", value):
        return f"a host name alone, like mail.example.org, not {value!r}"
    return None


def _security_contact(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if value.startswith(("https://", "mailto:")) and len(value) > len("mailto:"):
        return None
    if "@" in value and ":" not in value and " " not in value:
        return None
    return (
        f"not a mail address or an https:// URL: {value!r} "
        "(e.g. security@example.org or https://example.org/security)"
    )


def _write_limits(value: object) -> str | None:
    """Counts per time that ``limits`` reads (the rate-limit module parses them the same
    way when the app is built), or ``off`` alone."""
    from limits import parse

    items = [str(item) for item in value] if isinstance(value, tuple) else [str(value)]
    if [item.lower() for item in items] == ["off"]:
        return None
    for item in items:
        try:
            amount = parse(item).amount
        except ValueError:
            return (
                f"not a rate limit: {item!r} (a count per time, like 60/minute or "
                "500 per hour, comma-separated; or off alone)"
            )
        if amount < 1:
            return f"{item!r} allows nothing at all: write off to turn the limits off"
    return None


GLOBAL_KEYS: tuple[Key, ...] = (
    Key(
        "site-name",
        default="srcore network",
        help="The name of the whole network, shown in page titles, the navigation bar and mail.",
    ),
    Key(
        "environment",
        type="enum",
        choices=("development", "staging", "production"),
        default="development",
        help="Where this network runs. Anything but 'production' shows a banner on every "
        "page; 'development' also relaxes secure-cookie and CSRF-over-TLS requirements and "
        "reloads templates.",
    ),
    Key(
        "log-level",
        type="enum",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="The least severe log messages written by every service.",
    ),
    Key(
        "redis-url",
        type="url",
        check=_redis_url,
        help="Redis for caches, rate limits and replay marks shared between processes, and "
        "to pass meta's revocations from the process that received them to the others, "
        "e.g. redis://127.0.0.1:6379/0. Empty: in-process fallbacks, fine for one process.",
    ),
    Key(
        "write-rate-limit",
        type="list",
        default="60/minute, 500/hour",
        check=_write_limits,
        help="How many requests that change something (POST, PUT, PATCH, DELETE) each "
        "service takes from one account (its pages and all its tokens together), from one "
        "application acting for no user, or from one address when nobody is logged in: "
        "counts per time, comma-separated, e.g. 60/minute, 500/hour. One more is answered "
        "429 with Retry-After and changes nothing. Reads are never counted. Counted in "
        "Redis with redis-url (shared by every process), in each process otherwise. "
        "off: no limit. A service's own section may set its own.",
    ),
    Key(
        "webhooks-broker",
        type="url",
        check=_broker_url,
        help="The Celery broker URL webhook deliveries are queued on, e.g. "
        "redis://127.0.0.1:6379/1 (any scheme Celery has a transport for: redis://, "
        "rediss://, amqp://, ...). Empty: each service's local worker delivers straight "
        "from its database, with no broker to run.",
    ),
    Key(
        "webhook-celery-slots",
        type="int",
        default=8,
        check=_between(1, MAX_WEBHOOK_WORKERS),
        help="With a webhooks-broker: how many Celery tasks per service may drain its "
        "outbox at once (1 to 1024). A drain that finds more waiting than it holds asks "
        "one more process to join, up to this many. Raise it to the number of Celery "
        "worker processes that should share one service's bursts.",
    ),
    Key(
        "security-contact",
        check=_security_contact,
        help="Where people report a security hole in this network: a mail address (e.g. "
        "security@example.org) or an https:// page. Every service serves it as "
        "/.well-known/security.txt. Empty: no such file.",
    ),
    Key(
        "allow-private-webhook-targets",
        type="list",
        default=(),
        check=_networks,
        help="Networks (CIDR, comma- or line-separated) that webhook deliveries may reach "
        "although they are loopback, private, link-local, another special-purpose block "
        "IANA lists as not globally reachable, or an anycast service address (PCP, TURN, "
        "DNS-SD SRP, AMT, 6to4 and 6a44 relays), e.g. 10.1.0.0/16. Empty: such targets are "
        "refused, which protects internal services and network gear from forged requests.",
    ),
    Key(
        "webhook-allowed-ports",
        type="list",
        default=DEFAULT_WEBHOOK_PORTS,
        check=_ports,
        help="The ports webhook deliveries may connect to (comma- or line-separated): "
        "ports and ranges allowed (80, 1024-65535) minus the ones marked with ! (!6379). "
        "The default allows 80, 443 and 1024-65535 except well-known internal services' "
        "ports (databases, caches, brokers, cluster APIs). A URL with any other port is "
        "refused when subscribed and never connected to. A list allowing no port at all "
        "is refused.",
    ),
    Key(
        "webhook-poll-interval",
        type="duration",
        default=timedelta(seconds=1),
        check=_lasting(
            SHORTEST_POLL_INTERVAL,
            LONGEST_POLL_INTERVAL,
            too_short="the database would be kept busy with polls",
            too_long="new events would wait that long",
        ),
        help="How often an idle local webhook worker (srcore worker) looks for new events "
        "in its database (100ms to 10m); 'srcore worker --poll-interval' overrides it. "
        "meta's worker delivers revocations and profile changes to the services, so a "
        "short interval there (e.g. 200ms) keeps revocations fast.",
    ),
    Key(
        "webhook-timeout",
        type="duration",
        default=timedelta(seconds=15),
        check=_lasting(
            timedelta(seconds=1),
            MAX_WEBHOOK_TIMEOUT,
            too_short="few receivers answer that fast",
            too_long="a worker holds a delivery for 5 minutes, and must send and record it "
            "within them",
        ),
        help="How long one webhook delivery may take, from connecting to the end of the "
        "response, before it counts as failed and is retried (1s to 2m).",
    ),
    Key(
        "webhook-connect-timeout",
        type="duration",
        default=timedelta(seconds=5),
        check=_lasting(timedelta(milliseconds=100), MAX_WEBHOOK_TIMEOUT),
        help="How long a webhook delivery waits for the receiver to accept the connection "
        "(100ms to 2m). Set, it may not be longer than webhook-timeout, which bounds the "
        "whole delivery, connecting included.",
    ),
    Key(
        "webhook-retry-schedule",
        type="list",
        default="0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h",
        check=_durations,
        help="The delays before each attempt of a webhook delivery, the first attempt's "
        "first (comma-separated durations). Their count is the attempts made before a "
        "delivery is given up, at most 100; each delay is spread by up to 10% either way. "
        "A delay is at most 30d and none is shorter than the one before it. The default "
        "tries 10 times over about three days.",
    ),
    Key(
        "webhook-concurrency",
        type="int",
        default=16,
        check=_between(1, MAX_WEBHOOK_WORKERS),
        help="Webhook requests one worker process has in flight at once (1 to 1024); at "
        "most 4 of them go to the same receiver, so a slow receiver delays only its own "
        "deliveries, and at most half of them (but 4 at least) are one subscriber's, so "
        "whoever subscribes many slow receivers cannot hold up everyone else.",
    ),
    Key(
        "webhook-log-retention",
        type="duration",
        default=timedelta(days=14),
        check=_lasting(
            timedelta(hours=1), LONGEST_KEPT, too_short="the log is pruned once an hour"
        ),
        help="How long the delivery log (each attempt's request and response) is kept "
        "(1h to 3650d); a delivery that is over, and an event fanned out, go with it once "
        "no attempt of theirs is left (pruned hourly by the webhook worker).",
    ),
    Key(
        "webhook-disable-after",
        type="duration",
        default=timedelta(days=3),
        check=_lasting(
            timedelta(hours=1),
            LONGEST_KEPT,
            too_short="a receiver down for a moment would lose its subscription",
        ),
        help="A subscription whose deliveries have all failed for this long (1h to 3650d) "
        "is disabled and its owner, if a user, told by mail. A receiver answering 410 Gone "
        "is disabled at once. meta's pushes to the network's services never are.",
    ),
    Key(
        "http-timeout",
        type="duration",
        default=timedelta(seconds=10),
        check=_lasting(
            SHORTEST_HTTP_TIMEOUT,
            LONGEST_HTTP_TIMEOUT,
            too_short="every call to meta (logins, token checks) would fail",
            too_long="a page would wait that long for meta, holding a web worker",
        ),
        help="How long a service waits on another service's HTTP API (token checks, "
        "manifests) before giving up (100ms to 1m).",
    ),
    Key(
        "revocation-pull-interval",
        type="duration",
        default=timedelta(seconds=30),
        check=_pull_interval,
        help="How often each service asks meta for the revocations (logouts, revoked "
        "tokens, suspensions) it may have missed (1s to 1d). meta also pushes them at once; "
        "this bounds how late one arrives when a push is lost (without redis-url, also at "
        "the processes it did not land on). 0s: no rounds, only a pull when a process "
        "starts; with several processes it then needs redis-url.",
    ),
    Key(
        "smtp-host",
        check=_host_name,
        help="The SMTP server outgoing mail is sent through. Empty: mail is written to the "
        "log instead of being sent.",
    ),
    Key(
        "smtp-port",
        type="int",
        check=_port,
        help="The SMTP server's port. Empty: 465 with smtp-tls = tls, 587 with starttls, "
        "25 with none.",
    ),
    Key(
        "smtp-tls",
        type="enum",
        choices=("none", "starttls", "tls"),
        default="starttls",
        help="How the SMTP connection is encrypted: 'starttls' upgrades a plain connection, "
        "'tls' connects with TLS from the start, 'none' sends in the clear (local relays "
        "only).",
    ),
    Key(
        "smtp-timeout",
        type="duration",
        default=timedelta(seconds=10),
        check=_lasting(
            timedelta(seconds=1),
            timedelta(seconds=25),
            too_short="a mail server that is merely busy would lose mail",
            too_long="a page that mails waits that long for each message, and gunicorn "
            "stops a worker after 30s",
        ),
        help="How long handing one message to the SMTP server may take, all told: "
        "connecting, TLS, every answer and the message (1s to 25s). A page that mails waits "
        "at most that long for each message it sends (a change of address sends two), then "
        "says the mail could not be sent; nothing is retried.",
    ),
    Key("smtp-user", help="The SMTP login name. Empty: no login."),
    Key("smtp-password", secret=True, help="The SMTP password (see smtp-password-file)."),
    Key(
        "smtp-from",
        check=_mail_address,
        help="The sender address of outgoing mail, e.g. 'Example <noreply@example.org>'.",
    ),
)
"""The keys of the ``[global]`` section, shared by every service."""

SERVICE_KEYS: tuple[Key, ...] = (
    Key(
        "origin",
        type="url",
        required=True,
        check=_origin,
        help="Where users reach this service: scheme, host and port, no path, e.g. "
        "https://todo.example.org. Links and OAuth redirects are built from it.",
    ),
    Key(
        "internal-origin",
        type="url",
        check=_origin,
        help="Where other services reach this one from the inside (e.g. http://10.0.0.5:5001), "
        "if not through origin. Empty: origin is used.",
    ),
    Key(
        "database-url",
        type="url",
        required=True,
        check=check_database_url,
        help="This service's own database, as an SQLAlchemy URL: "
        "postgresql+psycopg://user@host/todo in production, sqlite:///var/todo.db for a "
        "demo. Each service has its own database. A relative SQLite path is relative to "
        "the config file's directory (to the working directory when set in the "
        "environment); the driver must be installed.",
    ),
    Key(
        "database-statement-timeout",
        type="duration",
        default=timedelta(seconds=15),
        check=_lasting(
            SHORTEST_STATEMENT_TIMEOUT,
            LONGEST_STATEMENT_TIMEOUT,
            too_short="ordinary pages would fail whenever the database is busy",
            too_long="a request would hold a web worker and the database that long",
        ),
        help="How long one database statement of a web request may run before the database "
        "stops it (100ms to 1h). The request is answered 503, what it had not committed is "
        "rolled back, and the log names the route. The default stays below gunicorn's 30s "
        "worker timeout. Migrations, workers and other commands are not bounded by it.",
    ),
    Key(
        "secret-key",
        required=True,
        secret=True,
        check=_secret_key,
        help="This service's own key for signing sessions and CSRF tokens, at least 32 "
        "characters; `srcore keygen` prints one. Never share it between services: each "
        "service has its own so a leak of one cannot forge another's sessions.",
    ),
    Key(
        "oauth-client-id",
        check=_client_id,
        help="The client id meta issued for this service, used to log users in (not digits "
        "only: it would read as an account id in tokens). Not needed in meta's own section.",
    ),
    Key(
        "oauth-client-secret",
        secret=True,
        help="The client secret belonging to oauth-client-id.",
    ),
    Key(
        "session-lifetime",
        type="duration",
        default=timedelta(days=30),
        check=_lasting(
            timedelta(minutes=1),
            LONGEST_KEPT,
            too_short="each login would end before the next page, sending the user to meta "
            "and back for ever",
        ),
        help="How long a web login to this service lasts without being renewed (1m to 3650d).",
    ),
    Key(
        "metrics-path",
        default="",
        check=_metrics_path,
        help="The path Prometheus metrics are served at, e.g. /metrics: a plain path, "
        "without ?, #, % or <>, and no path one of the service's pages answers (the "
        "service refuses to start, naming the page). Empty: no metrics endpoint. Keep it "
        "away from the public internet with your proxy.",
    ),
    Key(
        "proxy-fix-trusted-hops",
        type="int",
        default=0,
        check=_trusted_hops,
        help="How many reverse proxies in front of this service set X-Forwarded-For, "
        "-Proto, -Host and -Port. 0: the headers are ignored (the service is reached "
        "directly). Set it to exactly the number of proxies: one more than there are, and "
        "every client can forge its address (rate limits per address, logs, audit trail) "
        "by sending an X-Forwarded-For of its own; fewer, and every client has a proxy's "
        "address. Nothing at run time can tell such a mistake. At most "
        f"{MAX_TRUSTED_HOPS}: a CDN's two layers, a load balancer, a local proxy and a "
        "sidecar; a larger number is taken for a slip (11 for 1) and refused.",
    ),
    Key(
        "write-rate-limit",
        type="list",
        check=_write_limits,
        help="This service's own limit of requests that change something, written as "
        "[global] write-rate-limit (e.g. 20/minute, 200/hour, or off). Empty: the "
        "[global] one.",
    ),
    Key(
        "max-content-length",
        type="int",
        default=16 * 1024 * 1024,
        check=_at_least(1),
        help="The largest request body accepted, in bytes; larger requests get 413.",
    ),
    Key(
        "render-cache-size",
        type="int",
        default=32 * 1024 * 1024,
        check=_between(0, 1 << 40),
        help="Bytes of rendered user text (markdown, highlighted code) each process of this "
        "service keeps, so a page shown again is not rendered again; the least recently "
        "shown goes first. 0: none is kept, and every view renders its text again.",
    ),
)
"""The keys every service section has, before the keys the service declares itself."""
