"""The Flask subclass and the factory every service builds its app with.

``create_app`` turns one config file and one service manifest into a fully wired Flask app:
session cookie, database, templates, shared static files, CSRF, error pages, nav, health
check, metrics, request ids and the login seam. Everything it builds lives in
``app.extensions["srcore"]`` (a :class:`~srcore.service.SrcoreState`), so two apps in one
process never share state and nothing happens at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from jinja2 import ChoiceLoader, FileSystemLoader

from srcore.conditional import send_file_checked
from srcore.config import Config, ConfigError, Section, load_config
from srcore.hygiene import SrcoreRequest, SrcoreResponse
from srcore.logsetup import configure_default
from srcore.manifest import Manifest, load_manifest
from srcore.resources import resource_dir
from srcore.routing import API_PREFIX, SrcoreMap
from srcore.service import NavItem, SrcoreState, state
from srcore.sessions import SessionInterface

if TYPE_CHECKING:
    from flask import Request, Response
    from flask.testing import FlaskClient
    from sqlalchemy import MetaData
    from werkzeug.routing import MapAdapter

    from srcore.auth.link import MetaLink
    from srcore.auth.tokens import TokenVerifier
    from srcore.auth.web import LoginBackend
    from srcore.migrate import MigrationTarget
    from srcore.webhooks.outbox import CanReceive

__all__ = [
    "API_PREFIX",
    "NavItem",
    "SrcoreApp",
    "SrcoreState",
    "create_app",
    "migration_target",
    "state",
]


log = logging.getLogger("srcore")


class SrcoreJSONProvider(DefaultJSONProvider):
    """JSON with ISO 8601 datetimes in UTC with their offset (``+00:00``, RFC 3339's
    ``date-time``, as the OpenAPI documents say), which API clients parse without guessing."""

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            from srcore.db import as_utc

            return as_utc(o).isoformat()
        if isinstance(o, date):
            return o.isoformat()
        return DefaultJSONProvider.default(o)

    sort_keys = False


class SrcoreApp(Flask):
    """A Flask app that knows which srcore service it is.

    Its requests see HEAD as GET and read their body strictly; its responses encode any
    text (see :mod:`srcore.hygiene`). API requests have no cookie session.
    """

    json_provider_class = SrcoreJSONProvider
    request_class = SrcoreRequest
    response_class = SrcoreResponse
    #: No cookie session under the API prefix (see :mod:`srcore.sessions`).
    session_interface = SessionInterface()
    #: Warns of a route whose ``<int:...>`` would take an id no row can have.
    url_map_class = SrcoreMap

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._origin_adapters: dict[tuple[str, str, str], MapAdapter] = {}

    def send_static_file(self, filename: str) -> Response:
        """The service's own static file, its conditional and range requests read as the
        shared ones are (:func:`srcore.conditional.send_file_checked`)."""
        return send_file_checked(lambda: super(SrcoreApp, self).send_static_file(filename))

    def test_client(self, use_cookies: bool = True, **kwargs: Any) -> FlaskClient:
        """A test client that closes each response as a server would
        (:class:`srcore.testclient.ClosingClient`), unless ``test_client_class`` names
        another."""
        if self.test_client_class is not None:
            return super().test_client(use_cookies, **kwargs)
        from srcore.testclient import ClosingClient

        return ClosingClient(self, self.response_class, use_cookies=use_cookies, **kwargs)

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Callable[..., Any] | None = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        """Flask's, refusing a view whose ``@oauth`` or ``@login_required`` was written
        above the route decorator: the route registered the bare view, and the guard's
        wrapper was thrown away, leaving the API or the page open to anyone."""
        from srcore.auth.state import guards, lost_guard

        guard = lost_guard(view_func)
        name = endpoint or getattr(view_func, "__name__", "?")
        if guard is not None:
            raise RuntimeError(
                f"the view {name} is routed without its {guard}: that decorator is written "
                f"above the route's, so the route registered the view unguarded; put "
                f"{guard} below the route decorator"
            )
        if "@login_required" in guards(view_func) and rule.startswith(API_PREFIX):
            raise RuntimeError(
                f"the view {name} of {rule} is guarded by @login_required, which reads the "
                f"cookie session that API requests do not have (every call would fail): "
                f"guard it with @oauth('SERVICE/SCOPE:RO') instead, or serve it as a page"
            )
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)

    @property
    def srcore(self) -> SrcoreState:
        """This app's srcore state."""
        result: SrcoreState = self.extensions["srcore"]
        return result

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Build URLs against the configured ``origin``, never the request's Host.

        Routing still matches any Host, but every absolute URL (``url_for(...,
        _external=True)``, the redirect that adds a trailing slash) names the service's
        own origin: a forged Host or X-Forwarded-Host header cannot plant another host in
        a page, an API body, a webhook payload or a mail. With only an app context (a
        worker, a command) URLs are built against the origin too.
        """
        from urllib.parse import urlsplit

        st = self.extensions.get("srcore")
        if st is None or self.config["SERVER_NAME"] is not None:
            return super().create_url_adapter(request)
        origin = urlsplit(str(st.section["origin"]))
        if request is None:
            # Flask asks for this one with every app context, every request's included;
            # it never varies, and building URLs reads it without changing it.
            key = (origin.netloc, origin.scheme, str(self.config["APPLICATION_ROOT"]))
            found = self._origin_adapters.get(key)
            if found is None:
                found = self._origin_adapters[key] = self.url_map.bind(
                    origin.netloc, script_name=key[2], url_scheme=origin.scheme
                )
            return found
        adapter = super().create_url_adapter(request)
        if adapter is not None:
            adapter.server_name = origin.netloc
            adapter.url_scheme = origin.scheme
        return adapter


def _coerce_config(config: Config | str | os.PathLike[str] | None, manifest: Manifest) -> Config:
    if isinstance(config, Config):
        return config
    from srcore.config import find_config_path

    path = find_config_path(config)
    # Only this service's own declarations are needed to build it; other services'
    # sections are checked by `srcore config check`, which reads every manifest.
    return load_config(path, specs=dict(manifest.config))


def _section(config: Config, service_id: str) -> Section:
    if not config.has_service(service_id):
        from srcore.config import Problem

        raise ConfigError(
            [
                Problem(
                    file=str(config.path),
                    line=None,
                    section=service_id,
                    key=None,
                    message=f"the [{service_id}] section is missing; this service reads it",
                )
            ]
        )
    return config.section(service_id)


def create_app(
    service_id: str,
    import_name: str,
    *,
    config: Config | str | os.PathLike[str] | None = None,
    metadata: MetaData | None = None,
    user_model: type[Any] | None = None,
    manifest: Manifest | None = None,
    token_verifier: TokenVerifier | None = None,
    login: LoginBackend | None = None,
    identity: MetaLink | None = None,
    webhook_filter: CanReceive | None = None,
    **flask_options: Any,
) -> SrcoreApp:
    """Build the app of service *service_id* from the shared config file.

    *import_name* is the service package (``__name__`` of its app module); its
    ``templates/`` override the shared templates by name and its ``service.yaml`` is the
    manifest unless *manifest* is given. *metadata* is the service's SQLAlchemy metadata
    (for migrations); *user_model* its class built on :class:`srcore.db.UserMixin`.
    *config* is a loaded :class:`~srcore.config.Config` or a path; by default the file is
    looked up as ``srcore.config.find_config_path`` describes. *identity* replaces the
    link to meta built from the config (tests pass one whose HTTP session is a fake).
    *webhook_filter* is called as ``webhook_filter(subscription, outbox_row)`` when a
    subscription is limited to one resource, with a probe event about it; returning
    False refuses the subscription (its owner cannot see that resource). Who receives an
    emitted event is not the filter's call: the event's declared ``audience``, judged from
    the owner and visibility recorded when it was emitted, decides.
    """
    package = import_name.split(".")[0]
    if manifest is None:
        manifest = load_manifest(package)
    if manifest.id != service_id:
        raise ValueError(f"{package}/service.yaml declares id {manifest.id!r}, not {service_id!r}")
    cfg = _coerce_config(config, manifest)
    configure_default(str(cfg.global_["log-level"]), package)
    for problem in cfg.warnings:
        if problem.section in (None, "global", service_id) or str(problem.section).startswith(
            f"{service_id}::"
        ):
            log.warning("%s", problem)
    section = _section(cfg, service_id)

    app = SrcoreApp(import_name, **flask_options)
    from srcore import routing

    # Before any route is added: every service's routes may use <id:...>.
    routing.init_app(app.url_map)
    _configure_flask(app, cfg, section, service_id)
    _configure_templates(app)

    from srcore import db as db_module

    database = db_module.Database(str(section["database-url"]))

    app.extensions["srcore"] = SrcoreState(
        service_id=service_id,
        manifest=manifest,
        config=cfg,
        section=section,
        db=database,
        metadata=metadata,
        user_model=user_model,
        static_version=_static_version(),
        extensions=app.extensions,
    )
    db_module.init_app(app, database)

    from srcore import errors, headers, lifecycle, rendering, security_txt
    from srcore.render_cache import RenderCache

    cache_size = section["render-cache-size"]
    rendering.init_app(app, cache=RenderCache(cache_size if isinstance(cache_size, int) else 0))
    errors.init_app(app)
    lifecycle.init_app(app)
    from srcore import cors
    from srcore.auth.extension import Auth
    from srcore.mail import MailExtension
    from srcore.metrics import MetricsExtension

    cors.init_app(app)
    lifecycle.add_before(app, cors.answer_preflight)
    # The features, each keeping its state in app.extensions["srcore.<feature>"].
    Auth(login=login, token_verifier=token_verifier, identity=identity).init_app(app)
    MetricsExtension().init_app(app)
    MailExtension().init_app(app)
    headers.init_app(app)
    security_txt.init_app(app)
    _register_static(app)
    _register_health(app)
    _register_context(app)
    from srcore.openapi import views as openapi_views

    openapi_views.init_app(app)
    from srcore import once

    once.init_app(app)  # forms that create something do it once (forms.once())
    from srcore import conditional

    conditional.init_app(app)  # if_match's 412, in a view marked @conditional or not
    from srcore import webhooks

    webhooks.init_app(app, can_receive=webhook_filter)
    from srcore import ratelimit

    # Last: a write is counted once the request has passed every other check.
    ratelimit.init_app(app)
    return app


def _configure_flask(app: SrcoreApp, cfg: Config, section: Section, service_id: str) -> None:
    development = cfg.global_["environment"] == "development"
    origin = str(section["origin"])
    app.config.update(
        SECRET_KEY=section["secret-key"],
        # Services may share a host (127.0.0.1:5000 and :5001); cookies ignore ports, so
        # each service's session needs its own name or they would overwrite each other.
        SESSION_COOKIE_NAME=f"{service_id}_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=section["session-lifetime"],
        SESSION_COOKIE_SECURE=not development or origin.startswith("https://"),
        MAX_CONTENT_LENGTH=section.get("max-content-length") or 16 * 1024 * 1024,
        # CSRF is checked by srcore's own before-request hook so the API prefix is exempt.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_SSL_STRICT=not development,
        PREFERRED_URL_SCHEME="https" if origin.startswith("https://") else "http",
        TEMPLATES_AUTO_RELOAD=development,
    )
    hops = section.get("proxy-fix-trusted-hops")
    hops = hops if isinstance(hops, int) else 0
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )

    from flask_wtf.csrf import CSRFProtect

    CSRFProtect(app)


def _configure_templates(app: SrcoreApp) -> None:
    loaders: list[Any] = []
    if app.template_folder is not None:
        loaders.append(FileSystemLoader(os.path.join(app.root_path, app.template_folder)))
    loaders.append(FileSystemLoader(str(resource_dir("templates"))))
    # The service's own templates come first, so it can override any shared one by name.
    app.jinja_loader = ChoiceLoader(loaders)


def _static_version() -> str:
    """A short hash of the shared static files, so their URLs change when they do."""
    import hashlib

    digest = hashlib.sha256()
    root = resource_dir("static")
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_YEAR = 365 * 24 * 3600
#: How long a browser keeps /favicon.ico, whose URL does not change with the file.
_DAY = 24 * 3600


def _register_static(app: SrcoreApp) -> None:
    from flask import send_from_directory

    root = str(resource_dir("static"))
    version = app.srcore.static_version

    def shared_static(version_tag: str, filename: str) -> Any:
        response = send_file_checked(lambda: send_from_directory(root, filename, max_age=_YEAR))
        if response.status_code == 412:
            return response
        if version_tag == version:
            response.cache_control.immutable = True
            response.cache_control.public = True
        else:
            # An old or made-up version: serve the current file, but do not let it stick.
            response.cache_control.max_age = 0
        return response

    app.add_url_rule(
        "/static/srcore/<version_tag>/<path:filename>",
        endpoint="srcore_static",
        view_func=shared_static,
    )

    def favicon() -> Any:
        # A browser asks for /favicon.ico on a page that names no icon (a raw text view,
        # JSON): answered with the shared icon, not a 404 in its console and the log.
        return send_file_checked(
            lambda: send_from_directory(root, "favicon.svg", mimetype="image/svg+xml", max_age=_DAY)
        )

    app.add_url_rule("/favicon.ico", endpoint="srcore_favicon", view_func=favicon)

    def static_url(filename: str) -> str:
        from flask import url_for

        return url_for("srcore_static", version_tag=version, filename=filename)

    app.jinja_env.globals["static_url"] = static_url


def _register_health(app: SrcoreApp) -> None:
    # Never cached: a proxy or client repeating an earlier "ok" would hide an outage.
    fresh = {"Cache-Control": "no-store"}

    def healthz() -> tuple[dict[str, Any], int, dict[str, str]]:
        try:
            app.srcore.db.check()
        except Exception as exc:  # any failure of the database means "not healthy"
            log.error("health check failed: %s", exc)
            body = {"status": "unavailable", "errors": [{"reason": "database unreachable"}]}
            return body, 503, fresh
        return {"status": "ok", "service": app.srcore.service_id}, 200, fresh

    app.add_url_rule("/healthz", endpoint="srcore_healthz", view_func=healthz)


class TemplateContext:
    """The ``srcore`` object every template sees; its parts are computed when read."""

    def __init__(self, st: SrcoreState) -> None:
        self._st = st
        self.service_id = st.service_id
        self.service_name = st.manifest.name
        self.site_name = str(st.config.global_["site-name"])
        self.environment = str(st.config.global_["environment"])
        self.is_production = st.is_production

    @property
    def nav(self) -> list[NavItem]:
        return self._st.nav()

    @property
    def user(self) -> Any:
        from srcore.auth.web import current_user
        from srcore.errors import database_unreachable

        if database_unreachable():
            return None
        return current_user._get_current_object()

    @property
    def login_url(self) -> str:
        from flask import request, url_for

        from srcore.auth.web import is_safe_next

        target = request.full_path.rstrip("?")
        return url_for("srcore_login", next=target if is_safe_next(target) else None)

    @property
    def webhooks_url(self) -> str | None:
        """The webhook pages of this service, when it declares events."""
        if not self._st.manifest.events:
            return None
        from flask import url_for

        return url_for("srcore_webhooks.index")

    @property
    def logout_url(self) -> str:
        from flask import url_for

        return url_for("srcore_logout")

    @property
    def request_id(self) -> str:
        from srcore.lifecycle import request_id

        return request_id()


def _register_context(app: SrcoreApp) -> None:
    context = TemplateContext(app.srcore)
    app.jinja_env.globals["srcore"] = context


def migration_target(
    service_id: str, config_path: str | os.PathLike[str] | None = None
) -> MigrationTarget:
    """Build the migration target of an installed service from the config file.

    The service's app factory (``<package>:create_app``) is called so that the metadata
    is exactly what the running service uses.
    """
    import importlib
    from importlib import resources as importlib_resources

    from srcore.manifest import ManifestError, service_package
    from srcore.migrate import MigrationTarget

    package = service_package(service_id)
    factory: Callable[..., SrcoreApp] = importlib.import_module(package).create_app
    app = factory(config=config_path)
    st = app.srcore
    if st.metadata is None:
        raise ManifestError(f"service {service_id!r} passes no metadata to srcore.create_app")
    versions = Path(str(importlib_resources.files(package))) / "migrations" / "versions"
    return MigrationTarget(
        service_id=service_id,
        database_url=str(st.section["database-url"]),
        metadata=st.metadata,
        versions_dir=versions,
    )
