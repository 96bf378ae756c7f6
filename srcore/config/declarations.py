"""The keys srcore itself declares: :data:`GLOBAL_KEYS` and :data:`SERVICE_KEYS`.

Kept apart from the machinery so the list reads as the operator's reference: every key
srcore understands, with its type, default and help, in one place. The small checks above
it are the rules of single keys beyond their type; rules that span keys or services live
in the loader.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from srcore.config.database import check_database_url
from srcore.config.keys import Key, parse_duration
from srcore.config.ports import parse_ports

__all__ = ["GLOBAL_KEYS", "MIN_SECRET_KEY_LENGTH", "SERVICE_KEYS"]

#: A ``secret-key`` shorter than this is refused.
MIN_SECRET_KEY_LENGTH = 32


def _at_least(minimum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, int) and value < minimum:
            return f"must be at least {minimum}, not {value}"
        return None

    return check


def _durations(value: object) -> str | None:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        return "needs at least one delay (the first attempt's, usually 0s)"
    for item in items:
        try:
            parse_duration(str(item))
        except ValueError as exc:
            return str(exc)
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


def _redis_url(value: object) -> str | None:
    scheme = urlsplit(str(value)).scheme
    if scheme not in ("redis", "rediss", "unix"):
        return f"a Redis URL starts with redis://, rediss:// or unix://, not {scheme}://"
    return None


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
        parse_ports(str(item) for item in (value if isinstance(value, tuple) else ()))
    except ValueError as exc:
        return f"not a port list (like 80, 443, 1024-65535, !6379): {exc}"
    return None


def _url_path(value: object) -> str | None:
    if isinstance(value, str) and value and not value.startswith("/"):
        return f"must be a path starting with '/', like /metrics, not {value!r}"
    return None


def _mail_address(value: object) -> str | None:
    if isinstance(value, str) and "@" not in value:
        return f"not a mail address: {value!r}"
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
        "webhooks-broker",
        type="url",
        help="The Celery broker URL webhook deliveries are queued on, e.g. "
        "redis://127.0.0.1:6379/1. Empty: each service's local worker delivers straight "
        "from its database, with no broker to run.",
    ),
    Key(
        "webhook-celery-slots",
        type="int",
        default=8,
        check=_at_least(1),
        help="With a webhooks-broker: how many Celery tasks per service may drain its "
        "outbox at once. A drain that finds more waiting than it holds asks one more "
        "process to join, up to this many. Raise it to the number of Celery worker "
        "processes that should share one service's bursts.",
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
        "although they are loopback, private or link-local, e.g. 10.1.0.0/16. Empty: such "
        "targets are refused, which protects internal services from forged requests.",
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
        "refused when subscribed and never connected to.",
    ),
    Key(
        "webhook-poll-interval",
        type="duration",
        default=timedelta(seconds=1),
        help="How often an idle local webhook worker (srcore worker) looks for new events "
        "in its database; 'srcore worker --poll-interval' overrides it. meta's worker "
        "delivers revocations and profile changes to the services, so a short interval "
        "there (e.g. 200ms) keeps revocations fast.",
    ),
    Key(
        "webhook-timeout",
        type="duration",
        default=timedelta(seconds=15),
        help="How long one webhook delivery may take, from connecting to the end of the "
        "response, before it counts as failed and is retried.",
    ),
    Key(
        "webhook-connect-timeout",
        type="duration",
        default=timedelta(seconds=5),
        help="How long a webhook delivery waits for the receiver to accept the connection.",
    ),
    Key(
        "webhook-retry-schedule",
        type="list",
        default="0s, 5s, 5m, 30m, 2h, 5h, 10h, 14h, 20h, 24h",
        check=_durations,
        help="The delays before each attempt of a webhook delivery, the first attempt's "
        "first (comma-separated durations). Their count is the attempts made before a "
        "delivery is given up; each delay is spread by up to 10% either way. The default "
        "tries 10 times over about three days.",
    ),
    Key(
        "webhook-concurrency",
        type="int",
        default=16,
        check=_at_least(1),
        help="Webhook requests one worker process has in flight at once; at most 4 of "
        "them go to the same receiver, so a slow receiver delays only its own deliveries.",
    ),
    Key(
        "webhook-log-retention",
        type="duration",
        default=timedelta(days=14),
        help="How long the delivery log (each attempt's request and response) is kept.",
    ),
    Key(
        "webhook-disable-after",
        type="duration",
        default=timedelta(days=3),
        help="A subscription whose deliveries have all failed for this long is disabled and "
        "its owner, if a user, told by mail. A receiver answering 410 Gone is disabled at once.",
    ),
    Key(
        "http-timeout",
        type="duration",
        default=timedelta(seconds=10),
        help="How long a service waits on another service's HTTP API (token checks, "
        "manifests) before giving up.",
    ),
    Key(
        "revocation-pull-interval",
        type="duration",
        default=timedelta(seconds=30),
        help="How often each service asks meta for the revocations (logouts, revoked "
        "tokens, suspensions) it may have missed. meta also pushes them at once; this bounds "
        "how late one arrives when a push is lost. 0s: push only.",
    ),
    Key(
        "smtp-host",
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
        help="The client id meta issued for this service, used to log users in. Not needed "
        "in meta's own section.",
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
        help="How long a web login to this service lasts without being renewed.",
    ),
    Key(
        "metrics-path",
        default="",
        check=_url_path,
        help="The path Prometheus metrics are served at, e.g. /metrics. Empty: no metrics "
        "endpoint. Keep it away from the public internet with your proxy.",
    ),
    Key(
        "proxy-fix-trusted-hops",
        type="int",
        default=0,
        check=_at_least(0),
        help="How many reverse proxies in front of this service set X-Forwarded-For, "
        "-Proto, -Host and -Port. 0: the headers are ignored (the service is reached "
        "directly). Set it to exactly the number of proxies, or clients can forge their "
        "address.",
    ),
    Key(
        "max-content-length",
        type="int",
        default=16 * 1024 * 1024,
        check=_at_least(1),
        help="The largest request body accepted, in bytes; larger requests get 413.",
    ),
)
"""The keys every service section has, before the keys the service declares itself."""
