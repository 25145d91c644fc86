"""The ``__journey`` visitor cookie: reading it safely (linking it to the user: :mod:`journy_core.linking`).

The journy.io snippet sets ``__journey`` on the site's top-level domain; its value is the device ID that
``POST /link`` takes. The browser sends it, so it is untrusted input: :func:`clean_device_id` strips it, bounds its
length and refuses control characters, returning None (with a debug log, never an error) for anything odd.
"""

from __future__ import annotations

import logging

__all__ = ["COOKIE_NAME", "MAX_DEVICE_ID_LENGTH", "clean_device_id"]

logger = logging.getLogger("journy")

#: The cookie journy.io's snippet sets.
COOKIE_NAME = "__journey"
#: Longer values are not device IDs journy.io's snippet makes (they are UUID-like); refusing them bounds what an
#: attacker can push through the link endpoint.
MAX_DEVICE_ID_LENGTH = 128


def clean_device_id(raw: object) -> str | None:
    """The device ID in a raw cookie value, or None when there is none or it is not a plausible one."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().strip('"')  # some frameworks keep the quotes of a quoted cookie value
    if not value:
        return None
    if len(value) > MAX_DEVICE_ID_LENGTH:
        logger.debug("journy: ignoring a __journey cookie of %d characters", len(value))
        return None
    if not value.isprintable() or any(ch in value for ch in ' ;,\\"'):
        logger.debug("journy: ignoring a __journey cookie with control or separator characters")
        return None
    return value
