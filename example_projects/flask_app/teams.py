"""The example Flask app: users who belong to teams (journy.io accounts), with login, logout and a tracked event.

    .venv/bin/python example_projects/flask_app/run_demo.py          # non-interactive: emulator + app + report
    python -m journy_core.emulator &                                   # or by hand: the emulator on :8484, then
    flask --app example_projects/flask_app/teams.py seed               # demo data (ada@acme.test / password)
    flask --app example_projects/flask_app/teams.py run                # http://127.0.0.1:5000/

By default it talks to the local emulator (http://127.0.0.1:8484, or JOURNY_API_URL) with the emulator's key.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import click
from flask import Flask, abort, flash, g, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Column, ForeignKey, String, Table, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from journy_core.emulator import DEFAULT_API_KEY
from journy_flask import Journy


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
journy = Journy()

memberships = Table(
    "memberships",
    Base.metadata,
    Column("team_id", ForeignKey("team.id"), primary_key=True),
    Column("user_id", ForeignKey("user.id"), primary_key=True),
)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(timezone.utc))
    teams: Mapped[list[Team]] = relationship(secondary=memberships, back_populates="members")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)


class Team(db.Model):  # type: ignore[name-defined,misc]
    """The journy.io account: a team of users."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    domain: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=lambda: datetime.now(timezone.utc))
    members: Mapped[list[User]] = relationship(secondary=memberships, back_populates="teams")


def current_team() -> Team | None:
    """JOURNY_CURRENT_ACCOUNT: the team the page is about, else the user's first team."""
    team: Team | None = g.get("team")
    if team is None and current_user.is_authenticated and current_user.teams:
        team = current_user.teams[0]
    return team


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    api_url = os.environ.get("JOURNY_API_URL", "http://127.0.0.1:8484")
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL", "sqlite:///teams-example.db"),
        JOURNY_API_KEY=os.environ.get("JOURNY_API_KEY", DEFAULT_API_KEY),
        JOURNY_API_URL=api_url,
        # The emulator serves a do-nothing /tracker.js: commands stay in window.__journy_queue__ to look at.
        JOURNY_TRACKER_ID="emulator-tracker",
        JOURNY_TRACKER_DOMAIN=api_url,
        JOURNY_VERIFICATION_SECRET=os.environ.get("JOURNY_VERIFICATION_SECRET", "example-verification-secret"),
        JOURNY_USER_MODEL=User,
        JOURNY_USER_PROPERTIES={"full_name": "full_name", "registered_at": "created_at"},
        JOURNY_ACCOUNT_MODEL=Team,
        JOURNY_ACCOUNT_DOMAIN_FIELD="domain",
        JOURNY_ACCOUNT_MEMBERS="members",
        JOURNY_CURRENT_ACCOUNT=current_team,
    )
    app.config.update(config or {})
    db.init_app(app)  # before journy.init_app: Journy watches db.session
    login_manager.init_app(app)
    login_manager.login_view = "login"
    journy.init_app(app)
    _routes(app)
    with app.app_context():
        db.create_all()
    return app


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def _routes(app: Flask) -> None:
    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str | Response:
        if request.method == "POST":
            user = db.session.scalar(select(User).where(User.email == request.form.get("email", "")))
            if user is not None and check_password_hash(user.password_hash, request.form.get("password", "")):
                login_user(user, remember=bool(request.form.get("remember")))  # links the __journey cookie
                return redirect(request.args.get("next") or url_for("index"))
            flash("Unknown email or wrong password.")
        return render_template("login.html")

    @app.post("/logout")
    def logout() -> Response:
        logout_user()
        return redirect(url_for("index"))

    @app.get("/teams/<int:team_id>")
    @login_required
    def team(team_id: int) -> str:
        g.team = db.session.get(Team, team_id) or abort(404)
        if current_user not in g.team.members:
            abort(403)
        journy.set_screen("Team")
        return render_template("team.html", team=g.team)

    @app.post("/teams/<int:team_id>/invoices")
    @login_required
    def create_invoice(team_id: int) -> Response:
        g.team = db.session.get(Team, team_id) or abort(404)
        amount = int(request.form.get("amount", "100"))
        # Server-side event: queued, delivered in the background, for the current user and this team.
        journy.track("created_invoice", metadata={"amount": amount, "currency": "EUR"})
        flash(f"Invoice of {amount} EUR created.")
        return redirect(url_for("team", team_id=team_id))

    @app.cli.command("seed")
    def seed() -> None:
        """Create a demo user (ada@acme.test / password) and team."""
        ada = User(email="ada@acme.test", full_name="Ada Lovelace")
        ada.set_password("password")
        db.session.add(Team(name="Acme, Inc", plan="pro", domain="acme.test", members=[ada]))
        db.session.commit()
        journy.flush(timeout=10)
        click.echo("created ada@acme.test (password: password) in team 'Acme, Inc'")
