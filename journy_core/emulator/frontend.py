"""The emulator's stand-in for journy.io's tracker: the script it serves, and the check of each browser call.

A page rendered with ``TRACKER_DOMAIN`` pointing at the emulator loads ``/tracker.js`` (or ``/analytics.js``) from
it. That script (``tracker.js`` beside this module) sends every ``journy(...)`` command of the page to
``POST /_emulator/frontend``; here each one is checked the way journy.io checks identity verification once a site
turns it on: ``identify`` carries the HMAC of its ``userId``; ``account``, and ``pageview``, ``screen`` and
``event`` when they carry an ``accountId``, the HMAC of that account ID (:mod:`journy_core.verification`).

The endpoint takes no key (a browser has none) and answers any origin, since the pages come from the app's own
origin; what a page sends is untrusted, so every document is checked for shape and size before it is recorded.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..verification import secret_key, sign
from .state import utc_now

__all__ = [
    "MAX_CALLS_PER_POST",
    "TRACKER_JS",
    "TRACKER_PATHS",
    "VERIFIED_ID",
    "check_call",
    "frontend_entries",
    "verification_key",
]

#: The tracker script, served at both paths journy.io's snippets load it from.
TRACKER_JS: str = (resources.files(__package__) / "tracker.js").read_text(encoding="utf-8")
TRACKER_PATHS = frozenset({"/tracker.js", "/analytics.js"})

#: A page sends its queued commands in one POST; more than this in one is not a page's doing.
MAX_CALLS_PER_POST = 200
_MAX_COMMAND = 64

#: The ID whose HMAC each command's ``verification`` must be; other commands (``init``) carry none.
VERIFIED_ID: Mapping[str, str] = {
    "identify": "userId",
    "account": "accountId",
    "pageview": "accountId",
    "screen": "accountId",
    "event": "accountId",
}


def verification_key(secret: str | bytes) -> bytes | None:
    """The website's identity-verification secret as HMAC key bytes; ``""`` (or ``b""``) means none: stop checking.

    A blank secret or one of another type raises :class:`~journy_core.errors.InvalidArgumentError` (a ValueError)
    naming ``verification_secret``, never quoting it.
    """
    if secret in ("", b""):
        return None
    return secret_key(secret, "verification_secret")


def _identifier(value: object) -> str | None:
    """The ID as the browser's text: the snippet writes strings, a hand-written call may pass a number."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def check_call(command: str, args: object, key: bytes | None) -> tuple[bool | None, str]:
    """Whether the call's ``verification`` is the HMAC of its ID (None: nothing to check), and why, for the page.

    ``key`` is the verification secret as HMAC key bytes (:func:`journy_core.verification.secret_key`), or None
    when the emulator has no secret: then nothing is checked.
    """
    field = VERIFIED_ID.get(command)
    if field is None:
        return None, f"{command} carries no ID to verify"
    identifier = _identifier(args.get(field)) if isinstance(args, Mapping) else None
    if identifier is None:
        return None, f"no {field} to verify"
    if key is None:
        return None, "not checked: the emulator has no --verification-secret"
    sent = args.get("verification") if isinstance(args, Mapping) else None
    if not isinstance(sent, str) or not sent:
        return False, f"no verification sent for {field} (journy.io refuses it once verification is on)"
    if hmac.compare_digest(sent.lower().encode("ascii", "replace"), sign(key, identifier).encode("ascii")):
        return True, f"verification is the HMAC of {field}"
    return False, f"verification is not the HMAC of {field} with the emulator's secret"


def _calls(document: object) -> list[Mapping[str, Any]] | str:
    """The calls of a posted document, or why it is not one the tracker script sends."""
    if not isinstance(document, Mapping) or not isinstance(document.get("calls"), list):
        return 'the body must be {"page"?: string, "calls": [{"command": string, "args"?: object}]}'
    calls: list[Mapping[str, Any]] = document["calls"]
    if len(calls) > MAX_CALLS_PER_POST:
        return f"at most {MAX_CALLS_PER_POST} calls per request"
    for index, call in enumerate(calls):
        command = call.get("command") if isinstance(call, Mapping) else None
        if not isinstance(command, str) or not 0 < len(command) <= _MAX_COMMAND:
            return f"calls[{index}].command must be a command name such as 'identify'"
    return calls


def frontend_entries(document: object, referer: str | None, key: bytes | None) -> list[dict[str, Any]] | str:
    """The ``"frontend"`` state entries of a document posted by the tracker script, or why it is refused.

    Each entry: ``command``, ``args`` (as sent, ``verification`` included: the browser has it anyway),
    ``verified`` (True, False, or None when there is no ID to verify or no secret), ``reason``, ``time``
    (ISO 8601 UTC) and ``page`` (the URL the page reported, else the request's ``Referer``, else None).
    """
    calls = _calls(document)
    if isinstance(calls, str):
        return calls
    page = document.get("page") if isinstance(document, Mapping) else None
    page = page if isinstance(page, str) and page else referer
    now = utc_now()
    entries = []
    for call in calls:
        args = call.get("args")
        verified, reason = check_call(call["command"], args, key)
        entries.append(
            {
                "command": call["command"],
                "args": args,
                "verified": verified,
                "reason": reason,
                "time": now,
                "page": page,
            }
        )
    return entries
