"""Meta: the network's accounts and its OAuth 2.0 authorization server.

``create_app`` is the app factory that ``srcore serve meta``, gunicorn
(``meta:create_app()``) and the test plugin call. Importing the package only defines
things; the app is built from the config file when the factory runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srcore.app import SrcoreApp

if TYPE_CHECKING:
    from meta.logic import Passwords
    from meta.protection import LoginProtection

__all__ = ["MetaState", "create_app", "meta_state"]


@dataclass
class MetaState:
    """meta's own per-app state, in ``app.extensions["meta"]``."""

    passwords: Passwords
    protection: LoginProtection | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def meta_state(app: Any = None) -> MetaState:
    """The :class:`MetaState` of *app* (default: the current app)."""
    if app is None:
        from flask import current_app

        app = current_app
    result: MetaState = app.extensions["meta"]
    return result


def create_app(config: Any = None, **options: Any) -> SrcoreApp:
    """Build the meta app from the network's config file (or the given ``config``)."""
    import srcore
    from meta import oauth, protection
    from meta.admin.views import admin
    from meta.audit import agent_summary
    from meta.logic import Passwords
    from meta.models import Base, User
    from meta.passkeys_views import install as install_passkeys
    from meta.passkeys_views import passkey_pages
    from meta.settings import meta_settings
    from meta.twofactor import twofactor
    from meta.views import MetaLogin, accounts, install

    password_hasher = options.pop("password_hasher", None)
    app = srcore.create_app(
        "meta",
        __name__,
        config=config,
        metadata=Base.metadata,
        user_model=User,
        login=MetaLogin(),
        **options,
    )
    meta_settings(app)  # read [meta] once: a key that does not match service.yaml fails here
    app.extensions["meta"] = MetaState(passwords=Passwords(password_hasher))
    app.register_blueprint(accounts)
    app.register_blueprint(admin)
    app.register_blueprint(twofactor)
    app.register_blueprint(passkey_pages)
    app.add_template_filter(agent_summary, "agent_summary")
    limiter = protection.init_app(app)
    install(app, limiter)
    install_passkeys(app, limiter)
    oauth.init_app(app)
    return app
