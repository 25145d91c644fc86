# mypy: disable-error-code="import-untyped"
"""Test support for your app: what would have been sent to journy.io, with nothing sent.

In the spirit of django-anymail's test backend, these switch ``JOURNY["QUEUE"]`` to the ``memory`` backend for
one test and hand you an :class:`~journy_core.testing.Outbox`:

pytest (add ``pytest_plugins = ["journy_django.testing"]`` to your ``conftest.py``, or import the fixture)::

    def test_signup_is_tracked(client, journy_outbox, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/signup/", {...})
        assert journy_outbox.users()[0]["identification"]["email"] == "ada@acme.com"
        assert journy_outbox.events("signed_up")

unittest / Django ``TestCase``::

    class SignupTests(JournyTestMixin, TestCase):
        def test_signup_is_tracked(self):
            with self.captureOnCommitCallbacks(execute=True):
                self.client.post("/signup/", {...})
            self.assertEqual(len(self.journy_outbox.events("signed_up")), 1)

Model sync waits for the commit, which a ``TestCase`` never does: run the commit hooks with
``captureOnCommitCallbacks(execute=True)`` (or use ``TransactionTestCase`` / ``django_db(transaction=True)``).
``track()`` and device links are queued at once. Or, for a whole test run, put
``JOURNY = {..., "QUEUE": {"BACKEND": "memory"}}`` in the test settings and read
``Outbox(journy_django.get_journy().backend)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.test import override_settings

from journy_core.testing import Outbox

from .conf import get_journy

__all__ = ["JournyTestMixin", "Outbox", "capture_journy", "journy_outbox"]


@contextmanager
def capture_journy(**journy_settings: Any) -> Iterator[Outbox]:
    """Within the block, operations are recorded instead of sent; ``journy_settings`` override ``JOURNY`` keys.

    >>> with capture_journy() as outbox:                          # doctest: +SKIP
    ...     journy_django.track("exported_report", user=user)
    >>> outbox.events("exported_report")                          # doctest: +SKIP
    """
    current = dict(getattr(settings, "JOURNY", None) or {})
    overrides = {"ENABLED": True, **journy_settings, "QUEUE": {"BACKEND": "memory"}}
    with override_settings(JOURNY={**current, **overrides}):
        yield Outbox(get_journy().backend)


class JournyTestMixin:
    """A ``TestCase`` mixin: each test records into ``self.journy_outbox`` instead of sending.

    Set ``journy_settings = {...}`` on the class to override ``JOURNY`` keys for its tests.
    """

    journy_settings: dict[str, Any] = {}  # noqa: RUF012 - overridden per class, never mutated
    journy_outbox: Outbox

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        manager = capture_journy(**self.journy_settings)
        self.journy_outbox = manager.__enter__()
        self.addCleanup(manager.__exit__, None, None, None)  # type: ignore[attr-defined]


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def journy_outbox() -> Iterator[Outbox]:
        """What the app queued for journy.io during the test (nothing is sent)."""
        with capture_journy() as outbox:
            yield outbox
