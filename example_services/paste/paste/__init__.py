"""Paste: share text by link, an example service of an srcore network.

``create_app`` is the app factory that ``srcore serve paste``, gunicorn
(``paste:create_app()``) and the test plugin call. Importing the package only defines
things; the app is built from the config file when the factory runs.
"""

from __future__ import annotations

from typing import Any

from srcore.app import SrcoreApp

__all__ = ["create_app"]


def create_app(config: Any = None, **options: Any) -> SrcoreApp:
    """Build the paste app from the network's config file (or the given ``config``)."""
    import srcore
    import srcore.auth
    from paste.accounts import forget_account
    from paste.api import api
    from paste.logic import can_receive
    from paste.models import Base, User
    from paste.views import views

    # A subscription limited to one paste: to a public paste, or one's own.
    options.setdefault("webhook_filter", can_receive)
    app = srcore.create_app(
        "paste",
        __name__,
        config=config,
        metadata=Base.metadata,
        user_model=User,
        **options,
    )
    app.register_blueprint(views)
    app.register_blueprint(api)
    # An account deleted at meta: its pastes go with it, public and unlisted.
    srcore.auth.on_account_deleted(app, forget_account)
    return app
