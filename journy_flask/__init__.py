"""journy_flask: the Flask extension for journy.io (``Journy(app)``).

Work in progress: the extension itself lands with the Flask adapter. Until then, use :mod:`journy_core` directly.
"""

from journy_core import __version__

__all__ = ["__version__"]
