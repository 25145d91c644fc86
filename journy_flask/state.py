"""Where the extension keeps what it knows: per app (``app.extensions["journy"]``) and per request (``flask.g``)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, g, has_app_context
from markupsafe import Markup

from journy_core import ConfigurationError, TrackerCache
from journy_core import Journy as CoreJourny
from journy_core.client import Client
from journy_core.guard import guarded
from journy_core.importing import import_string
from journy_core.operations import Operation
from journy_core.page import SnippetCache
from journy_core.snippet import SnippetEvent

from .settings import Settings

__all__ = [
    "EMPTY_PAGE",
    "G_NAME",
    "SNIPPET_CACHE_SIZE",
    "UNSET",
    "JournyState",
    "PageData",
    "get_state",
    "page_data",
    "session_target",
]

logger = logging.getLogger("journy")

#: The name under which per-request data lives on ``flask.g``.
G_NAME = "_journy_page"

UNSET: Any = object()

#: Rendered snippets kept per app; past this many distinct (user, account, page) combinations the cache restarts.
SNIPPET_CACHE_SIZE = 2048


class PageData:
    """What a request adds to its page's snippet, and what it decided about itself (``g._journy_page``)."""

    __slots__ = ("account", "events", "screen", "skip")

    def __init__(self) -> None:
        self.screen: str | None = None
        self.account: Any = UNSET
        self.events: list[SnippetEvent] = []
        self.skip: bool | None = None


#: What a page that nobody customised reads (never written to: :func:`page_data` makes a request's own).
EMPTY_PAGE = PageData()


#: Whether this process ever recorded page data (a view's screen, account or event, a cached skip): until then
#: every request's is empty, and the snippet need not look in ``flask.g`` on every page.
_recorded = [False]


def page_data() -> PageData:
    """This request's :class:`PageData` (created on first use)."""
    data: PageData | None = g.get(G_NAME)
    if data is None:
        data = PageData()
        setattr(g, G_NAME, data)
        _recorded[0] = True
    return data


def recorded_page_data() -> PageData | None:
    """This request's :class:`PageData` if something recorded one, without creating it (None in the usual case,
    answered without a context lookup until some view of the process records page data)."""
    if not _recorded[0]:
        return None
    # flask.g itself, not through its proxy on each use: Flask documents _get_current_object() for this.
    found: PageData | None = g._get_current_object().get(G_NAME)
    return found


class JournyState:
    """Everything the extension knows about one app: ``app.extensions["journy"]``."""

    def __init__(self, app: Flask, settings: Settings, journy: CoreJourny) -> None:
        #: The checked ``JOURNY_*`` configuration.
        self.settings = settings
        #: The queue (a :class:`journy_core.Journy`); the test fixture swaps it for a ``memory`` one.
        self.journy = journy
        #: Whether internal errors are logged at ERROR (``app.debug``) rather than WARNING.
        self.debug = bool(app.debug)
        #: Whether a SQLAlchemy session is watched for the user and account models.
        self.syncs_models = False
        #: The tracker fetched by website domain (``JOURNY_WEBSITE_DOMAIN``), when no tracker ID is configured.
        self.tracker_cache: TrackerCache | None = None
        #: Rendered snippets by what they contain: the same user on the same account gets the same HTML, and
        #: rendering it (JSON, two HMACs) costs more than the rest of the extension's work on a page. New settings
        #: or a new tracker start it over. Marked safe as it is: the core renderer escapes every value it writes.
        self.snippet_cache: SnippetCache[Markup] = SnippetCache(Markup, size=SNIPPET_CACHE_SIZE)
        #: Whether Flask-Login is set up on the app; None until the first request (it may be set up after us).
        self.has_login_manager: bool | None = None
        #: By (mapper, whether it is the account model): the attributes whose change is worth a call, worked out
        #: for ``watched_settings`` (new settings start it over).
        self.watched_columns: dict[tuple[Any, bool], frozenset[str]] = {}
        self.watched_settings: Any = None

    def enqueue(self, operation: Operation) -> None:
        """Queue ``operation`` unless tracking is disabled; never raises."""
        if self.settings.enabled:
            with guarded(f"queueing {operation.kind}", loud=self.debug):
                self.journy.enqueue(operation)

    def enqueue_many(self, operations: list[Operation]) -> None:
        """Queue operations made together (one transaction's), in order, unless tracking is disabled; never
        raises. One message with the distributed backends."""
        if self.settings.enabled and operations:
            with guarded(f"queueing {len(operations)} operations", loud=self.debug):
                self.journy.enqueue_many(operations)

    def client(self) -> Client:
        """A direct client with this app's key (for ``flask journy check`` and ``sync``)."""
        if self.settings.api_key is None:
            raise ConfigurationError("JOURNY_API_KEY is not set: copy the API key from journy.io's settings.")
        return Client(self.settings.api_key, base_url=self.settings.api_url)


def get_state(app: Flask | None = None) -> JournyState:
    """The state of ``app`` (default: the current app); raises when ``Journy`` was not initialised on it."""
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "journy_flask needs an application context here: run inside a request, a CLI command, or "
                "`with app.app_context():`."
            )
        app = current_app
    found: JournyState | None = app.extensions.get("journy")
    if found is None:
        raise RuntimeError("journy_flask.Journy was not initialised on this app: call journy.init_app(app).")
    return found


def session_target(app: Flask, settings: Settings) -> Any:
    """The session factory to watch: ``JOURNY_SESSION``, else Flask-SQLAlchemy's ``db.session``, else None."""
    if settings.session is not None:
        value = settings.session
        target = import_string(value, "JOURNY_SESSION") if isinstance(value, str) else value
        return _checked_session(target, value)
    extension = app.extensions.get("sqlalchemy")
    if extension is not None and getattr(extension, "session", None) is not None:
        return extension.session
    return None


def _checked_session(target: Any, given: object) -> Any:
    """``target`` when SQLAlchemy can watch its sessions' events (a ``sessionmaker``, a ``scoped_session``, a
    ``Session`` or a subclass); else a :class:`ConfigurationError` naming ``JOURNY_SESSION``, not SQLAlchemy's
    "No such event ... for target" from deep in ``init_app``."""
    from sqlalchemy.orm import Session, scoped_session, sessionmaker  # noqa: PLC0415 - SQLAlchemy is optional

    if isinstance(target, (sessionmaker, scoped_session, Session)) or (
        isinstance(target, type) and issubclass(target, Session)
    ):
        return target
    raise ConfigurationError(
        f"JOURNY_SESSION must be a SQLAlchemy sessionmaker, scoped_session or Session class (or its dotted path); "
        f"got {given!r}."
    )
