"""The ``/_emulator/`` views, for other processes (a server under test, a benchmark), and the live page at ``/``.

Each view is a small function of the :class:`~journy_core.emulator.service.Service`, found by method and path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from .endpoints import parse_json
from .limits import Script
from .options import CONFIGURABLE
from .page import render_page
from .service import Service

__all__ = ["handle_control", "live_page"]

_View = Callable[[Service, str, bytes], tuple[int, Any]]

# The live page shows the latest of each, so that it stays quick to render after a long benchmark.
_PAGE_EVENTS = 200
_PAGE_CALLS = 50


def _calls(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    return 200, service.calls(dict(parse_qsl(query)).get("path"))


def _state(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    return 200, service.state()


def _reset(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    service.reset()
    return 200, {"reset": True}


def _script(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    script, error = parse_json(raw) if raw else (None, "no body")
    if error is not None or not isinstance(script, dict) or set(script) - {"status", "body", "path"}:
        return 400, {"message": 'the body must be {"status": int, "body"?: object|string|null, "path"?: str}'}
    try:
        checked = Script.checked(script.get("status", 0), script.get("body"), script.get("path"))
    except (TypeError, ValueError) as exc:
        return 400, {"message": str(exc)}
    return 200, {"scripted": service.add_script(checked)}


def _show_config(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    return 200, service.config()


def _change_config(service: Service, query: str, raw: bytes) -> tuple[int, Any]:
    options, error = parse_json(raw) if raw else ({}, None)
    if error is not None or not isinstance(options, dict):
        return 400, {"message": "the body must be a JSON object of options"}
    unknown = sorted(set(options) - CONFIGURABLE)
    if unknown:
        return 400, {"message": f"unknown option(s) {unknown}; known: {sorted(CONFIGURABLE)}"}
    try:
        service.configure(**options)
    except (TypeError, ValueError) as exc:
        return 400, {"message": str(exc)}
    return 200, service.config()


_VIEWS: dict[tuple[str, str], _View] = {
    ("GET", "/_emulator/calls"): _calls,
    ("GET", "/_emulator/state"): _state,
    ("POST", "/_emulator/reset"): _reset,
    ("POST", "/_emulator/script"): _script,
    ("GET", "/_emulator/config"): _show_config,
    ("POST", "/_emulator/config"): _change_config,
}


def handle_control(service: Service, method: str, path: str, query: str, raw: bytes) -> tuple[int, Any]:
    """The status and JSON document answering ``method path`` under ``/_emulator/``."""
    view = _VIEWS.get((method, path))
    if view is None:
        return 404, {"message": f"No such emulator view: {method} {path}"}
    return view(service, query, raw)


def live_page(service: Service, url: str) -> str:
    """The HTML page at ``/``: the latest data and calls, and the options in force."""
    return render_page(
        service.state(events_limit=_PAGE_EVENTS), service.calls(last=_PAGE_CALLS), url, service.options.summary()
    )
