"""Putting the tracking snippet into an HTML response that has none: ``INJECT_SNIPPET`` (``JOURNY_INJECT_SNIPPET``).

A template tag costs nothing at run time once its template is compiled, but a template compiled on every request
(Flask's ``render_template_string``, Django's ``Template(source)``) compiles the tag each time too: about 900,000
instructions for any one expression, whatever it calls, or 16% of a small page. Inserting the rendered snippet into
the finished page instead, as the New Relic agent does with its browser script and the debug toolbars with theirs,
costs a search of the body: the adapters do it after the view, on responses this module accepts.

The rules, written once for both adapters: only complete (not streamed), uncompressed ``text/html`` bodies get the
snippet; a page that rendered the snippet itself (its template calls it) or says why it has none is left alone; the
snippet goes right before ``</head>``, or, without a head, right before ``</body>``; a page with neither is left as
it is (a fragment, not a page).
"""

from __future__ import annotations

import re

__all__ = ["HAS_SNIPPET_MARKERS", "inject", "wants_injection"]

#: Bytes that only a page holding journy's snippet (or its "disabled" comment) contains.
HAS_SNIPPET_MARKERS: tuple[bytes, ...] = (b"window.journy=", b"<!-- journy.io")

_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def wants_injection(content_type: str | None, content_encoding: str | None, streamed: bool) -> bool:
    """Whether a response with these headers may get the snippet: a complete, uncompressed HTML page."""
    if streamed or content_encoding not in (None, "", "identity") or not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/html"


def inject(body: bytes, snippet: str, charset: str = "utf-8") -> bytes | None:
    """``body`` with ``snippet`` inserted before ``</head>`` (else ``</body>``), or None when the page needs none
    (it holds the snippet already) or has no place for it (a fragment)."""
    if any(marker in body for marker in HAS_SNIPPET_MARKERS):
        return None
    place = _HEAD_END.search(body) or _BODY_END.search(body)
    if place is None:
        return None
    at = place.start()
    try:
        encoded = snippet.encode(charset)
    except (LookupError, UnicodeEncodeError):  # an unknown charset, or one without these characters
        return None
    return b"".join((body[:at], encoded, body[at:]))
