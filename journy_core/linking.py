"""Linking the ``__journey`` device cookie to the logged-in user: the rule, once, for every adapter.

A device is linked once per session and user: the session keeps one record under :data:`SESSION_KEY`, a string
holding who the devices were linked to, then the device IDs, one a line::

    "42\\ndevice-a\\ndevice-b"

(a string costs session serializers least, and a cleaned device ID cannot hold a newline). Naming the user means a
second user logging in within the same session gets their own link; the last :data:`MAX_REMEMBERED` devices are
kept.

The adapters run the rule at login (their framework's login signal) and on requests (a middleware or an
``after_request`` hook). The request path asks :func:`linked_already` first: a substring test on the session's
record, answered without loading the user, which is all most requests cost. When it says no, the adapter runs the
full rule: :func:`link_device` with a session that has ``get`` and ``__setitem__`` (Django's and Flask's sessions
both do), or, where the session is read and written by awaiting (Django's async path), the same steps by hand:
:func:`device_to_link`, then :func:`plan_link` on the awaited record, then enqueue and store the new record.

Example, with a plain dict as the session::

    >>> session = {}
    >>> sent = []
    >>> link_device(session, "device-a", enabled=True, link_devices=True,
    ...             identify=lambda: ("42", None), enqueue=sent.append)
    True
    >>> linked_already(session[SESSION_KEY], "device-a")
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import operations as ops
from .devices import clean_device_id

__all__ = [
    "MAX_REMEMBERED",
    "SESSION_KEY",
    "Identity",
    "Link",
    "LinkSession",
    "device_to_link",
    "link_device",
    "linked_already",
    "plan_link",
    "who_of",
]

logger = logging.getLogger("journy")

#: The session key of the record, the same for every adapter. Sessions holding an older record (Django's
#: ``_journy_linked_devices``, Flask's ``_journy``) count as not linked: the device is linked once more, which
#: journy.io takes as a no-op.
SESSION_KEY = "_journy_link"
#: How many device IDs a record keeps (a user switching browsers within one session is rare; the record stays small).
MAX_REMEMBERED = 8
_SEPARATOR = "\n"

#: ``(user_id, email)`` of the logged-in user, as the adapter resolved them (either may be None, not both).
Identity = tuple[object, str | None]


class LinkSession(Protocol):
    """What the rule needs of a session: Django's ``request.session`` and ``flask.session`` both are one."""

    def get(self, key: str, /) -> Any:
        """The value stored under ``key``, or None."""

    def __setitem__(self, key: str, value: Any, /) -> None:
        """Store ``value`` under ``key``."""


@dataclass(frozen=True, slots=True)
class Link:
    """What :func:`plan_link` decided: the ``link`` operation to queue and the session record to store after."""

    operation: ops.Operation
    record: str


def linked_already(record: object, cookie: str) -> bool:
    """Whether the session's ``record`` lists ``cookie`` (the raw ``__journey`` value) as a linked device.

    The per-request fast path, before any user is loaded: it does not ask to whom the device was linked (a new
    user of the session is linked by the login signal, which runs the full rule). A listed value passed
    :func:`~journy_core.devices.clean_device_id` when it was linked, so the raw value needs no cleaning here.
    """
    return isinstance(record, str) and f"{_SEPARATOR}{cookie}{_SEPARATOR}" in f"{record}{_SEPARATOR}"


def device_to_link(cookie: object, *, enabled: bool, link_devices: bool) -> str | None:
    """The device ID to link from a raw ``__journey`` cookie, or None: journy off, linking off, or no plausible
    device ID in the cookie. Cheap (no session, no user), hence asked before either."""
    if not enabled or not link_devices or cookie is None:
        return None
    return clean_device_id(cookie)


def who_of(user_id: object, email: str | None) -> str | None:
    """How a record names the user: the user ID, else ``email:`` and the email; None for nobody."""
    if user_id is not None:
        who = str(user_id)
    elif email is not None:
        who = f"email:{email}"
    else:
        return None
    return who.replace(_SEPARATOR, " ")  # the separator of the record's lines


def plan_link(
    record: object,
    device_id: str,
    identity: Identity | None,
    skip_reason: Callable[[], str | None] | None = None,
) -> Link | None:
    """The rule, pure: whether ``device_id`` (from :func:`device_to_link`) is linked to ``identity``, given the
    session's ``record`` (what it holds under :data:`SESSION_KEY`, None for none).

    None when nobody is logged in (``identity`` None, or neither an ID nor an email), when the record lists the
    device for this user already, or when ``skip_reason()`` (called last, when all else says link) names a reason
    to leave the request out. Otherwise the ``link`` operation and the record to store once it is queued.
    Invalid identifiers raise :class:`~journy_core.errors.InvalidArgumentError` (from building the operation).
    """
    if identity is None:
        return None
    user_id, email = identity
    who = who_of(user_id, email)
    if who is None:
        return None
    devices = _devices_of(record, who)
    if device_id in devices:
        return None
    if skip_reason is not None:
        reason = skip_reason()
        if reason is not None:
            logger.debug("journy: not linking the device: %s", reason)
            return None
    operation = ops.link(device_id=device_id, user_id=user_id, email=email)
    remembered = [*devices, device_id][-MAX_REMEMBERED:]
    return Link(operation, _SEPARATOR.join([who, *remembered]))


def link_device(
    session: LinkSession | None,
    cookie: object,
    *,
    enabled: bool,
    link_devices: bool,
    identify: Callable[[], Identity | None],
    enqueue: Callable[[ops.Operation], object],
    skip_reason: Callable[[], str | None] | None = None,
) -> bool:
    """Link the ``__journey`` ``cookie`` to the logged-in user unless ``session`` did already; True when queued.

    The whole rule for sessions read and written synchronously. ``identify()`` resolves the user only when the
    cookie holds a device to link (it may cost a query); ``enqueue`` queues the operation (a
    :class:`~journy_core.Journy`'s ``enqueue``). Without a session (a request object outside the framework's
    request handling), the device is linked every time: nothing can remember it.
    """
    device_id = device_to_link(cookie, enabled=enabled, link_devices=link_devices)
    if device_id is None:
        return False
    record = session.get(SESSION_KEY) if session is not None else None
    link = plan_link(record, device_id, identify(), skip_reason)
    if link is None:
        return False
    enqueue(link.operation)
    if session is not None:
        session[SESSION_KEY] = link.record
    return True


def _devices_of(record: object, who: str) -> list[str]:
    """The device IDs ``record`` lists for ``who``; none when it names another user, or is not a record."""
    if not isinstance(record, str) or not record:
        return []
    recorded_who, *devices = record.split(_SEPARATOR)
    return devices if recorded_who == who else []
