"""journy_django: the Django app for journy.io.

Add ``"journy_django"`` to ``INSTALLED_APPS``, ``journy_django.middleware.JournyMiddleware`` to ``MIDDLEWARE``,
one ``JOURNY = {...}`` dict to the settings and ``{% load journy %}{% journy_snippet %}`` to the base template.
Users and accounts are then synced after each commit, the ``__journey`` cookie is linked at login, and every page
carries the snippet with server-side identity verification. See ``docs/django.md``.

From code::

    import journy_django

    journy_django.track("created_invoice", user=request.user, account=org, metadata={"amount": 100})
    journy_django.sync(org, members=True)        # queue an upsert now
    with journy_django.pause_sync():             # bulk imports: no per-row calls
        ...
"""

from journy_core import __version__

from .api import track
from .conf import JournyConfigurationError, get_journy
from .snippet import add_page_event, set_account, set_screen
from .sync import is_paused, pause_sync, should_sync, sync

__all__ = [
    "JournyConfigurationError",
    "__version__",
    "add_page_event",
    "get_journy",
    "is_paused",
    "pause_sync",
    "set_account",
    "set_screen",
    "should_sync",
    "sync",
    "track",
]
