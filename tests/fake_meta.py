"""A stand-in for meta's HTTP answers, reached through a real ``requests.Session``.

The fake is a tiny Flask app speaking meta's documented contract (metadata, authorize,
token, JWKS, profile, users, revocations). :class:`FakeMeta.session` returns a
``requests.Session`` whose transport hands requests to that app in process, so the code
under test runs its real HTTP calls (auth headers, params, timeouts, status handling).
``down = True`` makes every call fail as a dead server would.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, jsonify, redirect, request
from requests.adapters import BaseAdapter
from werkzeug.test import Client

from srcore.auth import jose

META = "http://meta.test"


class _Adapter(BaseAdapter):
    def __init__(self, fake: FakeMeta) -> None:
        super().__init__()
        self.fake = fake

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.fake.calls.append(f"{request.method} {urlsplit(str(request.url)).path}")
        if self.fake.down:
            raise requests.ConnectionError("connection refused (fake meta is down)")
        url = urlsplit(str(request.url))
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        answer = Client(self.fake.app).open(
            url.path,
            query_string=url.query,
            method=str(request.method),
            headers=dict(request.headers),
            data=body or b"",
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers.update(dict(answer.headers))
        response.raw = io.BytesIO(answer.get_data())
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


class FakeMeta:
    """meta's answers for one service (*client_id*/*client_secret*)."""

    def __init__(self, *, client_id: str = "sample", client_secret: str = "s3cret") -> None:
        self.key = jose.generate_key()
        self.client_id = client_id
        self.client_secret = client_secret
        self.down = False
        self.calls: list[str] = []
        self.users: dict[int, dict[str, Any]] = {}
        self.logged_in: int | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.app = self._build()

    def session(self) -> requests.Session:
        http = requests.Session()
        http.mount(META, _Adapter(self))
        return http

    def add_user(self, user_id: int, username: str, **fields: Any) -> dict[str, Any]:
        profile = {
            "id": user_id,
            "username": username,
            "email": f"{username}@example.org",
            "user_type": "active",
            "url": None,
            "location": None,
            "bio": None,
            "suspension_notice": None,
        }
        profile.update(fields)
        self.users[user_id] = profile
        return profile

    def token(self, *, user_id: int | None, audience: Any, scope: str, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": META,
            "sub": str(user_id) if user_id is not None else self.client_id,
            "aud": audience,
            "client_id": self.client_id,
            "scope": scope,
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        return jose.sign(payload, self.key, typ="at+jwt")

    def webhook(
        self,
        event: str,
        data: Any,
        *,
        service_id: str = "sample",
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of a webhook meta's worker would deliver to *service_id*:
        Standard Webhooks, signed with the secret derived from the client secret."""
        import json

        from srcore.signatures import derive_secret, sign

        body = json.dumps(
            {"type": event, "timestamp": "2026-01-01T00:00:00+00:00", "data": data}
        ).encode()
        when = int(time.time()) if timestamp is None else timestamp
        message_id = "msg_" + uuid.uuid4().hex[:26]
        key = secret or derive_secret(self.client_secret, service_id)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(when),
            "webhook-signature": sign(key, message_id, when, body),
        }
        return headers, body

    def push(self, events: list[dict[str, Any]], **options: Any) -> tuple[dict[str, str], bytes]:
        """A ``revocation:issued`` webhook carrying *events*."""
        return self.webhook("revocation:issued", {"events": events}, **options)

    def add_event(self, kind: str, subject: str, **times: int | None) -> dict[str, Any]:
        event = {
            "seq": len(self.events) + 1,
            "kind": kind,
            "subject": subject,
            "not_before": times.get("not_before"),
            "expires_at": times.get("expires_at"),
        }
        self.events.append(event)
        return event

    # -- the app -------------------------------------------------------------------

    def _client_ok(self) -> bool:
        auth = request.authorization
        return (
            auth is not None
            and auth.username == self.client_id
            and auth.password == self.client_secret
        )

    def _bearer_user(self) -> int | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        from joserfc.jwk import KeySet

        try:
            claims = jose.decode(header[7:], KeySet([self.key])).claims
        except Exception:
            return None
        sub = claims.get("sub")
        return int(sub) if isinstance(sub, str) and sub.isdigit() else 0

    def _build(self) -> Flask:
        app = Flask("fake_meta")

        @app.get("/.well-known/oauth-authorization-server")
        def metadata() -> Any:
            return jsonify(
                issuer=META,
                authorization_endpoint=f"{META}/oauth/authorize",
                token_endpoint=f"{META}/oauth/token",
                jwks_uri=f"{META}/oauth/jwks.json",
            )

        @app.get("/oauth/jwks.json")
        def jwks() -> Any:
            return jsonify(keys=[self.key.as_dict(private=False)])

        @app.get("/oauth/authorize")
        def authorize() -> Any:
            args = request.args
            if self.logged_in is None:
                return "login form", 200
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "user": self.logged_in,
                "challenge": args["code_challenge"],
                "redirect_uri": args["redirect_uri"],
                "client_id": args["client_id"],
            }
            query = urlencode({"code": code, "state": args["state"]})
            return redirect(f"{args['redirect_uri']}?{query}")

        @app.post("/oauth/token")
        def token() -> Any:
            if not self._client_ok():
                return jsonify(error="invalid_client"), 401
            form = request.form
            if form.get("grant_type") == "client_credentials":
                tok = self.token(user_id=None, audience="meta", scope=form.get("scope", ""))
                return jsonify(access_token=tok, token_type="Bearer", expires_in=3600)
            grant = self.codes.pop(form.get("code", ""), None)
            if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                return jsonify(error="invalid_grant"), 400
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                return jsonify(error="invalid_grant", error_description="PKCE"), 400
            tok = self.token(
                user_id=grant["user"], audience=["sample", "meta"], scope="meta/profile:RO"
            )
            return jsonify(access_token=tok, token_type="Bearer", expires_in=3600)

        @app.get("/api/profile")
        def profile() -> Any:
            uid = self._bearer_user()
            if not uid or uid not in self.users:
                return jsonify(errors=[{"reason": "no"}]), 401
            return jsonify(self.users[uid])

        @app.get("/api/users/<int:uid>")
        def user(uid: int) -> Any:
            if self._bearer_user() is None:
                return jsonify(errors=[{"reason": "no"}]), 401
            if uid not in self.users:
                return jsonify(errors=[{"reason": "no such user"}]), 404
            return jsonify(self.users[uid])

        @app.get("/oauth/revocations")
        def revocations() -> Any:
            if not self._client_ok():
                return jsonify(error="invalid_client"), 401
            since = int(request.args.get("since", "0"))
            events = [e for e in self.events if e["seq"] > since][:1000]
            return jsonify(events=events, last=events[-1]["seq"] if events else since)

        return app


def build_service(
    tmp_path: Any,
    fake: FakeMeta,
    *,
    global_extra: str = "revocation-pull-interval = 0s\n",
    service_extra: str = "",
    origin: str = "http://sample.test",
    database_url: str | None = None,
    another_process: bool = False,
) -> Any:
    """The sample service at *origin* in a network whose meta is *fake*, on *database_url*
    (a fresh SQLite file if None). With *another_process*, a second app on the config an
    earlier call wrote in *tmp_path* (the same secrets), as another process of the service."""
    import sample_service

    from srcore.auth.oauth_client import build_meta_link
    from srcore.config import load_config
    from srcore.manifest import load_manifest

    path = tmp_path / "config.ini"
    if not another_process:
        path.write_text(
            "[global]\n"
            "environment = development\n"
            f"{global_extra}\n"
            "[meta]\n"
            f"origin = {META}\n"
            f"database-url = sqlite:///{tmp_path / 'meta.db'}\n"
            f"secret-key = {secrets.token_urlsafe(40)}\n\n"
            "[sample]\n"
            f"origin = {origin}\n"
            f"database-url = {database_url or 'sqlite:///' + str(tmp_path / 'sample.db')}\n"
            f"secret-key = {secrets.token_urlsafe(40)}\n"
            f"oauth-client-id = {fake.client_id}\n"
            f"oauth-client-secret = {fake.client_secret}\n"
            f"{service_extra}",
            encoding="utf-8",
        )
    config = load_config(path, specs=dict(load_manifest("sample_service").config))
    link = build_meta_link(config, "sample", http=fake.session())
    app = sample_service.create_app(config=config, identity=link)
    app.config["TESTING"] = True
    st = app.extensions["srcore"]
    st.metadata.create_all(st.db.engine)
    from srcore.migrate import core_metadata

    core_metadata().create_all(st.db.engine)  # the core lineage's, as migrated
    return app
