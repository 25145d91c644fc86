"""The human side of the emulator: the live HTML page and the snippet text.

Every value shown on the page came from an API call, so from whatever app (or attacker) called the emulator:
all of it goes through :func:`html.escape`, and the page carries no script at all (it refreshes with a meta tag),
which lets the server send a Content-Security-Policy that forbids scripts outright.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["PAGE_CSP", "render_page", "render_snippet"]

#: Sent with the page: no script may run there even if escaping were ever missed.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

# The loader stub exactly as the contract gives it: clients and tests compare snippets against it.
_LOADER_STUB = (
    "window.journy = window.journy || function(command, args, callback) "
    "{ (window.__journy_queue__ ||= []).push({command, args, date: Date.now(), callback}) };"
)

_MAX_ROWS = 200
_MAX_CALL_ROWS = 50

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2430; background: #fafbfc; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
p.meta { color: #5a6473; margin: 0; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { border: 1px solid #dde2e8; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td code { white-space: pre-wrap; word-break: break-word; font-size: 12px; }
.empty { color: #8a93a0; font-style: italic; }
.removed { color: #a33; } .active { color: #176b2c; } .fault { color: #a33; font-weight: 600; }
"""


def _script_json(value: object) -> str:
    """JSON that cannot end a ``<script>`` element nor open an HTML comment, whatever the strings hold."""
    text = json.dumps(value, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_snippet(tracker_id: str, domain: str, tracking_domain: str) -> str:
    """The website snippet the way journy.io hands it out: loader stub, async tracker, init, pageview."""
    src = html.escape(tracking_domain.rstrip("/") + "/tracker.js", quote=True)
    init = _script_json({"trackerId": tracker_id, "domain": domain})
    return (
        "<script>\n"
        f"{_LOADER_STUB}\n"
        "</script>\n"
        f'<script async src="{src}"></script>\n'
        "<script>\n"
        f'journy("init", {init});\n'
        'journy("pageview");\n'
        "</script>"
    )


def _e(value: object) -> str:
    if value is None:
        return '<span class="empty">-</span>'
    return html.escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), quote=True)


def _ident(ident: Mapping[str, Any] | None) -> str:
    if not ident:
        return _e(None)
    return " / ".join(_e(value) for value in ident.values())


def _mapping(values: Mapping[str, Any] | None) -> str:
    if not values:
        return _e(None)
    lines = (f"{_e(name)}: {_e(json.dumps(value, ensure_ascii=False))}" for name, value in values.items())
    return "<code>" + "\n".join(lines) + "</code>"


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], total: int) -> str:
    shown = [row for row, _ in zip(rows, range(_MAX_ROWS), strict=False)]
    suffix = f" ({total})" if len(shown) == total else f" ({total}, latest {len(shown)} shown)"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    if not shown:
        body = f'<tr><td colspan="{len(headers)}" class="empty">nothing yet</td></tr>'
    else:
        body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in shown)
    return f"<h2>{html.escape(title)}{suffix}</h2>\n<table><tr>{head}</tr>{body}</table>\n"


def _time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _verified(verified: bool | None, reason: str) -> str:
    """The ``verified`` cell: a word a person reads at a glance, and the reason beside it."""
    word, css = {True: ("yes", "active"), False: ("NO", "fault"), None: ("-", "empty")}[verified]
    return f"<span class='{css}'>{word}</span> <small>{_e(reason)}</small>"


def render_page(state: Mapping[str, Any], calls: Sequence[Mapping[str, Any]], url: str, config: str) -> str:
    """The live page at ``/``: what the emulator received, newest first, refreshed every two seconds."""
    users = state["users"]
    accounts = state["accounts"]
    memberships = state["memberships"]
    events = state["events"]
    links = state["links"]
    frontend = state["frontend"]
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='2'>",
        "<title>journy.io emulator</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>journy.io emulator</h1>",
        f"<p class='meta'>API at <code>{_e(url)}</code> &middot; {_e(config)} &middot; "
        "this page refreshes every 2 seconds &middot; JSON at <code>/_emulator/state</code> and "
        "<code>/_emulator/calls</code></p>",
        _table(
            "Users",
            ("userId", "email", "properties", "updated"),
            ((_e(u["userId"]), _e(u["email"]), _mapping(u["properties"]), _e(u["updatedAt"])) for u in reversed(users)),
            len(users),
        ),
        _table(
            "Accounts",
            ("accountId", "domain", "properties", "updated"),
            (
                (_e(a["accountId"]), _e(a["domain"]), _mapping(a["properties"]), _e(a["updatedAt"]))
                for a in reversed(accounts)
            ),
            len(accounts),
        ),
        _table(
            "Members",
            ("account", "user", "status", "updated"),
            (
                (
                    _ident(m["account"]),
                    _ident(m["user"]),
                    f"<span class='{_e(m['status'])}'>{_e(m['status'])}</span>",
                    _e(m["updatedAt"]),
                )
                for m in reversed(memberships)
            ),
            len(memberships),
        ),
        _table(
            "Events",
            ("name", "user", "account", "metadata", "triggeredAt", "received"),
            (
                (
                    _e(ev["name"]) + (" <em>(deprecated POST /events)</em>" if ev["deprecated"] else ""),
                    _ident(ev["user"]),
                    _ident(ev["account"]),
                    _mapping(ev["metadata"]),
                    _e(ev["triggeredAt"]),
                    _e(ev["receivedAt"]),
                )
                for ev in reversed(events)
            ),
            len(events),
        ),
        _table(
            "Linked devices",
            ("deviceId", "user", "linked"),
            ((_e(ln["deviceId"]), _ident(ln["user"]), _e(ln["linkedAt"])) for ln in reversed(links)),
            len(links),
        ),
        _table(
            "Browser calls (sent by the tracker script at /tracker.js)",
            ("command", "args", "verified", "page", "received"),
            (
                (
                    _e(call["command"]),
                    _mapping(call["args"]) if isinstance(call["args"], Mapping) else _e(call["args"]),
                    _verified(call["verified"], call["reason"]),
                    _e(call["page"]),
                    _e(call["time"]),
                )
                for call in reversed(frontend)
            ),
            len(frontend),
        ),
        _table(
            "Recent API calls",
            ("time (UTC)", "method", "path", "status", "fault", "applied"),
            (
                (
                    _e(_time(c["time"])),
                    _e(c["method"]),
                    _e(c["path"]),
                    _e(c["status"]),
                    f"<span class='fault'>{_e(c['fault'])}</span>" if c["fault"] else _e(None),
                    _e("yes" if c["applied"] else "no"),
                )
                for c in calls[-_MAX_CALL_ROWS:][::-1]
            ),
            min(len(calls), _MAX_CALL_ROWS),
        ),
        "</body></html>\n",
    ]
    return "\n".join(parts)
