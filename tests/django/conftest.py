"""Django for the tests under tests/django only: configured here, in-process, from ``tests/django/settings.py``.

Configuring through ``settings.configure()`` (not ``DJANGO_SETTINGS_MODULE``) keeps the environment of the
subprocesses other test packages start clean, and leaves ``pytest tests/core`` free of Django altogether.
"""

from __future__ import annotations

from collections.abc import Iterator

import django
import pytest
from django.conf import settings

from journy_core.testing import Outbox

if not settings.configured:
    from tests.django import settings as test_settings

    settings.configure(**{name: getattr(test_settings, name) for name in dir(test_settings) if name.isupper()})
    django.setup()

from journy_django.conf import get_journy, reset


@pytest.fixture(autouse=True)
def _fresh_journy() -> Iterator[None]:
    """Each test starts with settings read afresh and an empty memory backend."""
    reset()
    yield
    reset()


@pytest.fixture
def outbox() -> Outbox:
    """What the app queued (the test settings use the memory backend)."""
    return Outbox(get_journy().backend)


from journy_django.testing import journy_outbox  # noqa: E402, F401 - the fixture users import the same way
