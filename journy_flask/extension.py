"""The ``Journy`` Flask extension: ``Journy(app)`` or ``journy = Journy(); journy.init_app(app)``.

One extension object can serve several apps (application factories, tests): everything it knows about an app
lives in ``app.extensions["journy"]`` (a :class:`JournyState`), never on the extension object, and its methods
find the app through ``current_app``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, has_request_context
from werkzeug.wrappers import Request

from journy_core import ConfigurationError, TrackerCache, assembly
from journy_core import Journy as CoreJourny
from journy_core import operations as ops
from journy_core.snippet import page_event
from journy_core.worker import configure_worker

from . import hooks, models
from .cli import journy_cli
from .identities import (
    account_id_of,
    account_operation,
    is_account,
    is_user,
    member_ids,
    resolve_soft_deletes,
    soft_deleted,
    user_email_of,
    user_id_of,
    user_operation,
)
from .jinja import JournyExtension
from .settings import DEFAULTS, Settings, read_settings
from .snippet import snippet_global
from .state import UNSET, JournyState, get_state, page_data, session_target

__all__ = ["Journy", "JournyState"]

logger = logging.getLogger("journy")


def _check_is_flask(app: object) -> None:
    """Refuse, at once and by name, an app that is not a :class:`flask.Flask`: the extension hooks Flask's
    synchronous request cycle, and Quart (the async look-alike) would fail later, far from the cause."""
    if isinstance(app, Flask):
        return
    kind = f"{type(app).__module__}.{type(app).__qualname__}"
    if kind.split(".", 1)[0] == "quart":
        raise ConfigurationError(
            f"journy_flask supports Flask apps, and {kind} is a Quart app: Quart is not supported (its request "
            "hooks, sessions and templates are async). Use journy_core.Journy directly from your Quart code."
        )
    raise ConfigurationError(f"journy_flask.Journy needs a flask.Flask app, got {kind}.")


def _build_queue(settings: Settings) -> CoreJourny:
    return assembly.build_journy(settings)


class Journy:
    """The journy.io extension.

    >>> app = Flask(__name__)                                # doctest: +SKIP
    >>> app.config["JOURNY_API_KEY"] = "..."                 # doctest: +SKIP
    >>> journy = Journy(app)                                 # doctest: +SKIP
    >>> journy.track("created_invoice", metadata={"amount": 100})   # in a view: the current user  # doctest: +SKIP

    In templates: ``{{ journy_snippet() }}`` in the base layout, ``{% journy_event "opened_billing" %}`` anywhere.
    Command line: ``flask journy check`` and ``flask journy sync``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check the ``JOURNY_*`` configuration of ``app`` and hook the extension into it.

        Raises :class:`~journy_core.ConfigurationError` saying which key to set when the configuration cannot work.
        """
        _check_is_flask(app)
        if "journy" in app.extensions:
            raise RuntimeError("journy_flask.Journy is already initialised on this app; call init_app once per app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))
        settings = resolve_soft_deletes(read_settings(app.config))
        target = self._session_to_watch(app, settings)
        if models.HAS_SQLALCHEMY:
            from .outbox import configure_outbox  # noqa: PLC0415 - needs SQLAlchemy

            # The outbox's store on the watched session's engine, its table in the app's metadata.
            settings = configure_outbox(app, settings, target)
        # Built last among the checks, so that a configuration error leaves no background thread behind.
        state = JournyState(app, settings, _build_queue(settings))

        if settings.enabled and settings.tracker is None and settings.website_domain is not None:
            assert settings.api_key is not None  # checked by read_settings
            fetcher = assembly.snippet_client(settings)
            state.tracker_cache = TrackerCache(
                lambda domain: str(fetcher.get_tracking_snippet(domain).data["snippet"]),
                settings.website_domain,
                ttl=settings.snippet_cache_seconds,
            )

        if target is not None:
            models.attach_session_events(target, state)
            state.syncs_models = True

        if settings.api_key is not None:
            configure_worker(lambda: assembly.worker_client(settings))

        app.extensions["journy"] = state
        hooks.install(app, state)

        app.add_template_global(snippet_global(state), "journy_snippet")
        app.jinja_env.add_extension(JournyExtension)  # {% journy_event %}
        app.cli.add_command(journy_cli)

    @staticmethod
    def _session_to_watch(app: Flask, settings: Settings) -> Any:
        """The SQLAlchemy session factory to hook, or None when no model is configured."""
        if settings.user_model is None and settings.account_model is None:
            return None
        if not models.HAS_SQLALCHEMY:
            raise ConfigurationError(
                "JOURNY_USER_MODEL / JOURNY_ACCOUNT_MODEL need SQLAlchemy: pip install 'journy[flask,sqlalchemy]'."
            )
        target = session_target(app, settings)
        if target is None:
            raise ConfigurationError(
                "JOURNY_USER_MODEL / JOURNY_ACCOUNT_MODEL are set but there is no SQLAlchemy session to watch: "
                "call db.init_app(app) (Flask-SQLAlchemy) before journy.init_app(app), or set JOURNY_SESSION "
                "to your sessionmaker or scoped_session (or its dotted path)."
            )
        return target

    # -- finding the app --------------------------------------------------------------------------------------

    @staticmethod
    def state(app: Flask | None = None) -> JournyState:
        """The state of ``app`` (default: the current app): ``app.extensions["journy"]``."""
        return get_state(app)

    # -- server-side calls --------------------------------------------------------------------------------------

    def track(
        self,
        name: str,
        *,
        user: Any = UNSET,
        account: Any = UNSET,
        metadata: Mapping[str, object] | None = None,
        triggered_at: object = None,
    ) -> None:
        """Queue an event. ``user`` and ``account`` are model instances or IDs; in a request they default to the
        current user and account (pass ``None`` to leave one out). Bad arguments raise
        :class:`~journy_core.InvalidArgumentError` here; delivery never raises."""
        state = self.state()
        settings = state.settings
        if user is UNSET:
            user = hooks.current_user(state) if has_request_context() else None
        if account is UNSET:
            account = hooks.current_account(state) if has_request_context() else None
        user_id = user_id_of(settings, user)
        email = user_email_of(settings, user) if user_id is None else None
        account_id = account_id_of(settings, account)
        operation = ops.track(
            name,
            user_id=user_id,
            email=email,
            account_id=account_id,
            metadata=metadata,
            triggered_at=triggered_at,
        )
        state.enqueue(operation)

    def sync(self, obj: Any) -> None:
        """Queue an upsert of a user or account instance now (and, for an account, the add of its members),
        without waiting for a commit; its delete when it is soft-deleted (``JOURNY_USER_DELETED`` /
        ``JOURNY_ACCOUNT_DELETED``). Raises ``TypeError`` for an object of neither model."""
        state = self.state()
        settings = state.settings
        deleted = soft_deleted(settings, obj)
        if is_user(settings, obj):
            operation = user_operation(settings, obj, delete=deleted)
            if operation is not None:
                state.enqueue(operation)
        elif is_account(settings, obj):
            operation = account_operation(settings, obj, delete=deleted)
            if operation is not None:
                state.enqueue(operation)
                members = [] if deleted else member_ids(settings, obj)
                if members:
                    account_id = operation.payload["identification"].get("accountId")
                    state.enqueue(ops.add_users_to_account(account_id=account_id, users=members))
        else:
            raise TypeError(
                f"journy.sync() takes an instance of JOURNY_USER_MODEL or JOURNY_ACCOUNT_MODEL, not "
                f"{type(obj).__name__}."
            )

    def link(
        self,
        *,
        user_id: object = None,
        email: str | None = None,
        user: Any = None,
        request: Request | None = None,
    ) -> bool:
        """Link the visitor's ``__journey`` cookie to a user, once per session and device: for apps without
        Flask-Login (which is hooked automatically). Returns whether a ``link`` was queued."""
        state = self.state()
        if user is not None:
            user_id = user_id_of(state.settings, user)
            email = email or user_email_of(state.settings, user)
        return hooks.link_device(state, user_id=user_id, email=email, request=request)

    # -- the page's snippet ---------------------------------------------------------------------------------

    def set_screen(self, name: str) -> None:
        """Record a ``screen`` named ``name`` on this page instead of a ``pageview``."""
        page_data().screen = name

    def set_account(self, account: Any) -> None:
        """The account this page is about (an instance or an ID), overriding ``JOURNY_CURRENT_ACCOUNT``."""
        page_data().account = account

    def browser_event(self, name: str, metadata: Mapping[str, object] | None = None, *, account: Any = None) -> None:
        """Record an event from the browser when this page loads (rendered by ``journy_snippet()``). Bad
        arguments raise :class:`~journy_core.InvalidArgumentError` here, not while the page renders: the rules of
        :meth:`track` (:func:`journy_core.snippet.page_event`)."""
        account_id = None if account is None else account_id_of(self.state().settings, account)
        page_data().events.append(page_event(name, metadata, account_id))

    # -- helpers ----------------------------------------------------------------------------------------------

    @staticmethod
    def paused() -> models.pause_sync:
        """``with journy.paused():`` records no model change in the block (also a decorator)."""
        return models.pause_sync()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds) until what is queued is delivered."""
        return self.state().journy.flush(timeout)

    def stats(self) -> dict[str, int]:
        """The queue's counters: queued, sent, retried, coalesced, dropped, failed."""
        return self.state().journy.stats()
