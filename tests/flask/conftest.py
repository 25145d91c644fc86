"""Flask apps for the tests: Flask-Login, Flask-SQLAlchemy models (a user and a ``Team`` account with members),
on SQLite and, when it is running, PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask, render_template_string, request
from flask_login import LoginManager, UserMixin, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from journy_core import worker
from journy_core.testing import Outbox
from journy_flask import Journy
from journy_flask.testing import journy_outbox  # noqa: F401 - the fixture, under test too
from tests.conftest import require_service


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

team_members = Table(
    "team_members",
    Base.metadata,
    Column("team_id", ForeignKey("team.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("user.id", ondelete="CASCADE"), primary_key=True),
)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    full_name: Mapped[str] = mapped_column(String(200), default="")
    plan: Mapped[str | None] = mapped_column(String(20), default=None)
    last_seen: Mapped[str | None] = mapped_column(String(40), default=None)  # not synced
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime(2024, 1, 15, tzinfo=timezone.utc))
    opted_out: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)  # soft deletion (JOURNY_USER_DELETED)
    teams: Mapped[list[Team]] = relationship(secondary=team_members, back_populates="members")

    def journy_should_sync(self) -> bool:
        return not self.opted_out


class Team(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "team"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str | None] = mapped_column(String(20), default=None)
    is_deleted: Mapped[bool] = mapped_column(default=False)  # soft deletion (JOURNY_ACCOUNT_DELETED)
    members: Mapped[list[User]] = relationship(secondary=team_members, back_populates="teams")


SECRET = "test-verification-secret"
PAGE = "<html><head>{{ journy_snippet() }}</head><body>{{ body|default('') }}</body></html>"


def base_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "TESTING": True,
        "SECRET_KEY": "test",
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "JOURNY_QUEUE": {"BACKEND": "memory"},
        "JOURNY_TRACKER_ID": "tracker-1",
        "JOURNY_TRACKER_DOMAIN": "https://go.acme.test",
        "JOURNY_VERIFICATION_SECRET": SECRET,
        "JOURNY_USER_MODEL": User,
        "JOURNY_ACCOUNT_MODEL": Team,
        "JOURNY_ACCOUNT_MEMBERS": "members",
        "JOURNY_USER_PROPERTIES": {"full_name": "full_name", "plan": "plan", "registered_at": "created_at"},
        "JOURNY_CURRENT_ACCOUNT": current_team,
    }
    config.update(overrides)
    return config


def current_team() -> Team | None:
    team_id = request.args.get("team")
    return db.session.get(Team, int(team_id)) if team_id else None


def build_app(database_uri: str = "sqlite://", *, login: bool = True, **overrides: Any) -> Flask:
    """An app with Flask-SQLAlchemy, optionally Flask-Login, and Journy; its tables created."""
    app = Flask(f"journy_test_{uuid.uuid4().hex[:6]}")
    app.config.update(base_config(SQLALCHEMY_DATABASE_URI=database_uri, **overrides))
    db.init_app(app)
    if login:
        manager = LoginManager(app)
        manager.user_loader(lambda user_id: db.session.get(User, int(user_id)))

        @app.post("/login/<int:user_id>")
        def log_in(user_id: int) -> str:
            login_user(db.session.get(User, user_id), remember=request.args.get("remember") == "1")
            return "in"

        @app.post("/logout")
        def log_out() -> str:
            logout_user()
            return "out"

    Journy(app)

    @app.get("/page")
    def page() -> str:
        return render_template_string(PAGE)

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    with app.app_context():
        db.create_all()
    return app


@pytest.fixture(autouse=True)
def _isolated_worker_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # init_app registers a process-wide worker client factory: keep each test's away from the other tests.
    monkeypatch.setattr(worker, "_factories", [])
    monkeypatch.setattr(worker, "_local", threading.local())


@pytest.fixture
def app() -> Iterator[Flask]:
    app = build_app()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A temporary PostgreSQL database on 127.0.0.1:5432 (trust auth, user postgres), dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"journy_flask_{uuid.uuid4().hex[:10]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    """The same app on SQLite and on PostgreSQL (skipped, with the reason, when PostgreSQL is not running)."""
    with contextlib.ExitStack() as stack:
        uri = "sqlite://" if request.param == "sqlite" else stack.enter_context(postgres_database())
        app = build_app(uri)
        yield app
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def outbox_of(app: Flask) -> Outbox:
    """What ``app`` queued (its JOURNY_QUEUE is the memory backend)."""
    return Outbox(app.extensions["journy"].journy.backend)


@pytest.fixture
def add_user(app: Flask) -> Callable[..., int]:
    def add(**fields: Any) -> int:
        with app.app_context():
            user = User(email=fields.pop("email", "ada@acme.test"), full_name=fields.pop("full_name", "Ada"), **fields)
            db.session.add(user)
            db.session.commit()
            return user.id

    return add
