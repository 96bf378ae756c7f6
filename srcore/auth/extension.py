"""The auth feature as a Flask extension: web login, bearer tokens and the link to meta.

:class:`Auth` builds what a service needs to know who is asking (its login backend, its
token verifier and its :class:`~srcore.auth.link.MetaLink`) from the app's config,
unless the caller passes them (tests, meta itself), keeps them in
``app.extensions["srcore.auth"]`` and adds the login, callback, well-known and revocation
routes. ``init_app`` does no IO: meta's keys are fetched when a first signature is checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from srcore.auth import api, oauth_client, web, wellknown
from srcore.auth.state import EXTENSION_KEY, AuthState, LoginBackend
from srcore.service import state

if TYPE_CHECKING:
    from flask import Flask

    from srcore.auth.link import MetaLink
    from srcore.auth.tokens import TokenVerifier

__all__ = ["Auth"]


class Auth:
    """The auth feature of one service; each option replaces what the config would give."""

    def __init__(
        self,
        *,
        login: LoginBackend | None = None,
        token_verifier: TokenVerifier | None = None,
        identity: MetaLink | None = None,
    ) -> None:
        self.login = login
        self.token_verifier = token_verifier
        self.identity = identity

    def init_app(self, app: Flask) -> AuthState:
        """Keep the app's auth state in ``app.extensions["srcore.auth"]`` and add its routes.

        Needs ``app.extensions["srcore"]`` (the service's id and config).
        """
        st = state(app)
        identity = self.identity
        if identity is None:
            identity = oauth_client.build_meta_link(st.config, st.service_id)
        verifier = self.token_verifier
        if verifier is None and identity is not None:
            verifier = identity.token_verifier()
        login = self.login
        if login is None:
            login = oauth_client.default_login_backend(st.config, st.service_id)
        auth = AuthState(login=login, token_verifier=verifier, identity=identity)
        app.extensions[EXTENSION_KEY] = auth
        api.init_app(app)
        web.init_app(app)
        wellknown.init_app(app)
        if identity is not None:
            # Only a service that logs in through meta loads the revocation machinery.
            from srcore.auth import revocation

            oauth_client.init_app(app)
            revocation.init_app(app)
        from srcore.auth import deletion

        deletion.init_app(app)
        return auth
