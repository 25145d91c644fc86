"""journy_flask: the Flask extension for journy.io.

>>> from journy_flask import Journy                # doctest: +SKIP
>>> journy = Journy()                              # doctest: +SKIP
>>> journy.init_app(app)                           # doctest: +SKIP

It links the ``__journey`` visitor cookie at login (Flask-Login), syncs the configured SQLAlchemy user and account
models after each commit, renders the snippet with server-side identity verification (``{{ journy_snippet() }}``),
queues ``journy.track(...)`` off the request path, and adds ``flask journy check`` and ``flask journy sync``.
"""

from journy_core import ConfigurationError, __version__

from .extension import Journy, JournyState
from .models import pause_sync
from .settings import DEFAULTS

__all__ = ["DEFAULTS", "ConfigurationError", "Journy", "JournyState", "__version__", "pause_sync"]
