"""journy_django: the Django app for journy.io (link on login, model sync after commit, the snippet tag).

Work in progress: the app itself lands with the Django adapter. Until then, use :mod:`journy_core` directly.
"""

from journy_core import __version__

__all__ = ["__version__"]
