"""Todo: ticket trackers, an ordinary service of an srcore network.

``create_app`` is the app factory that ``srcore serve todo``, gunicorn
(``todo:create_app()``) and the test plugin call. Importing the package only defines
things; the app is built from the config file when the factory runs.
"""

from __future__ import annotations

from typing import Any

from srcore.app import SrcoreApp

__all__ = ["create_app"]


def create_app(config: Any = None, **options: Any) -> SrcoreApp:
    """Build the todo app from the network's config file (or the given ``config``)."""
    import srcore
    import srcore.auth
    from todo.api import api
    from todo.events import can_receive
    from todo.models import Base, User
    from todo.views import views

    # Subscribers receive an event only while they can still see its tracker.
    options.setdefault("webhook_filter", can_receive)
    app = srcore.create_app(
        "todo", __name__, config=config, metadata=Base.metadata, user_model=User, **options
    )
    app.register_blueprint(views)
    app.register_blueprint(api)
    from todo.accounts import forget_account

    # An account deleted at meta: its trackers go, what it wrote elsewhere stays unnamed.
    srcore.auth.on_account_deleted(app, forget_account)
    return app
