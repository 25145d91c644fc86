"""Test support for the app's own tests: see what would have been sent to journy.io, send nothing.

With pytest, load the plugin (``pytest_plugins = ["journy_flask.testing"]`` in your top-level ``conftest.py``, or
``from journy_flask.testing import journy_outbox`` in any ``conftest.py``) and ask for ``journy_outbox`` next to your
``app`` fixture::

    def test_signup_is_tracked(client, journy_outbox):
        client.post("/signup", data={"email": "ada@acme.com"})
        assert journy_outbox.events("signed_up")
        assert journy_outbox.users()[0]["identification"]["email"] == "ada@acme.com"

Without pytest, ``with capture_operations(app) as outbox:`` does the same for one block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from flask import Flask

from journy_core import Journy as CoreJourny
from journy_core.testing import Outbox

from .state import get_state

__all__ = ["Outbox", "capture_operations", "journy_outbox"]


@contextmanager
def capture_operations(app: Flask) -> Iterator[Outbox]:
    """Switch ``app``'s journy queue to the ``memory`` backend for the block and yield its :class:`Outbox`.

    Tracking is switched on for the block (``JOURNY_ENABLED`` may be False in your test config) so that what the
    app would send is recorded; the previous queue comes back afterwards.
    """
    state = get_state(app)
    previous_queue, previous_settings = state.journy, state.settings
    memory = CoreJourny(queue={"BACKEND": "memory"})
    state.journy = memory
    if not previous_settings.enabled:
        state.settings = replace(previous_settings, enabled=True)
    try:
        yield Outbox(memory.backend)
    finally:
        state.journy, state.settings = previous_queue, previous_settings


try:
    import pytest
except ImportError:  # capture_operations() works without pytest
    pass
else:

    @pytest.fixture
    def journy_outbox(request: pytest.FixtureRequest) -> Iterator[Outbox]:
        """What the app (your ``app`` fixture) would have sent to journy.io during the test."""
        app: Any = request.getfixturevalue("app")
        with capture_operations(app) as outbox:
            yield outbox
