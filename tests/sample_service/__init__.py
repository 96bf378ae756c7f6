"""A minimal srcore service used by srcore's own tests."""

from __future__ import annotations

from typing import Any, TypedDict

from flask import Blueprint, render_template_string
from sqlalchemy import select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import srcore
import srcore.db
from srcore.db import UserMixin


class Base(DeclarativeBase):
    metadata = srcore.db.make_metadata()
    type_annotation_map = srcore.db.TYPE_ANNOTATION_MAP


class User(UserMixin, Base):
    __tablename__ = "user"


class Thing(Base):
    __tablename__ = "thing"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class ThingData(TypedDict):
    """The data of ``thing:created`` (service.yaml names this type as its payload)."""

    id: int
    name: str


pages = Blueprint("pages", __name__)
api = Blueprint("api", __name__, url_prefix="/api")


@pages.route("/")
def index() -> str:
    greeting = srcore.state().section["greeting"]
    return render_template_string(
        '{% extends "layout.html" %}{% block content %}<p id="greeting">{{ g }}</p>{% endblock %}',
        g=greeting,
    )


@pages.route("/private")
@srcore.login_required
def private() -> str:
    return f"hello {srcore.current_user.username}"


@pages.route("/form", methods=["GET", "POST"])
def form() -> Any:
    from flask import request
    from flask_wtf.csrf import generate_csrf

    if request.method == "GET":
        return {"csrf": generate_csrf()}
    return {"ok": True}


@pages.route("/boom")
def boom() -> str:
    raise RuntimeError("kaboom: secret detail")


@api.route("/things", methods=["GET"])
@srcore.oauth("sample/things:RO")
def list_things() -> Any:
    rows = srcore.db.session.scalars(select(Thing).order_by(Thing.id)).all()
    return {"results": [{"id": t.id, "name": t.name} for t in rows]}


@api.route("/things", methods=["POST"])
@srcore.oauth("sample/things:RW")
def create_thing() -> Any:
    valid = srcore.Validation(srcore_request())
    name = valid.require("name")
    valid.raise_if_invalid()
    thing = Thing(name=name)
    srcore.db.session.add(thing)
    srcore.db.session.commit()
    return {"id": thing.id, "name": thing.name}, 201


@api.route("/whoami")
@srcore.oauth("sample/things:RO")
def whoami() -> Any:
    user = srcore.current_user
    return {"user": user.username if user else None}


@api.route("/boom")
def api_boom() -> str:
    raise RuntimeError("kaboom: secret detail")


def srcore_request() -> Any:
    from flask import request

    return request


def create_app(config: Any = None, **options: Any) -> srcore.SrcoreApp:
    app = srcore.create_app(
        "sample", __name__, config=config, metadata=Base.metadata, user_model=User, **options
    )
    app.register_blueprint(pages)
    app.register_blueprint(api)
    return app
