"""Checking an API key against journy.io: the shared core of ``manage.py journy_check`` and ``flask journy check``."""

from __future__ import annotations

from dataclasses import dataclass, field

from .client import Client
from .errors import APIError, JournyError, UnauthorizedError

__all__ = ["KeyReport", "check_api_key"]

#: What the integration needs: writing data, and (when the snippet is fetched by website domain) the snippet.
REQUIRED_PERMISSIONS = ("TrackData",)
SNIPPET_PERMISSION = "GetTrackingSnippet"


@dataclass(frozen=True)
class KeyReport:
    """What :func:`check_api_key` found. ``ok`` is true when the key works and has every permission needed."""

    ok: bool
    permissions: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    calls_remaining: int | None = None
    rate_limit: int | None = None
    problem: str | None = None


def check_api_key(
    client: Client, *, needs_snippet: bool = False, key_setting: str = "the API key setting"
) -> KeyReport:
    """Ask journy.io (``GET /validate``) what the client's key may do; never raises for API or network errors.
    ``key_setting`` names the setting to fix in messages (``"JOURNY['API_KEY']"``, ``"JOURNY_API_KEY"``)."""
    try:
        result = client.get_api_key_details()
    except UnauthorizedError as error:
        return KeyReport(False, problem=f"journy.io refused the API key: {error.message}. Check {key_setting}.")
    except APIError as error:
        return KeyReport(False, problem=f"journy.io answered {error.status}: {error.message}")
    except JournyError as error:
        return KeyReport(False, problem=f"journy.io could not be reached at {client.base_url}: {error}")
    needed = list(REQUIRED_PERMISSIONS) + ([SNIPPET_PERMISSION] if needs_snippet else [])
    missing = [name for name in needed if name not in result.permissions]
    problem = (
        f"the API key lacks the permission(s) {', '.join(missing)}: add them in journy.io's settings (Connections)"
        if missing
        else None
    )
    return KeyReport(
        ok=not missing,
        permissions=result.permissions,
        missing=missing,
        calls_remaining=result.calls_remaining,
        rate_limit=result.rate_limit,
        problem=problem,
    )
