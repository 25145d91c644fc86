"""What the emulator remembers of the calls it applied: users, accounts, memberships, events, linked devices.

The store is deliberately dumb and lenient where journy.io's behaviour is not documented (a membership for an
account nobody upserted creates a bare account, as the real API accepts it), so tests of a client see what the
client sent rather than the emulator's opinions. It is not thread-safe by itself: the server holds one lock around
every call into it, which keeps each API call atomic with its entry in the call log.
"""

from __future__ import annotations

import copy
import datetime
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCOUNT_CRM_PROPERTIES",
    "DEFAULT_SEGMENTS",
    "MAX_EVENTS",
    "MAX_FRONTEND_CALLS",
    "USER_CRM_PROPERTIES",
    "Store",
    "utc_now",
]

#: Property names journy.io forwards to CRMs; listed by the property endpoints even before anything sets them,
#: as the real API does for its built-in properties.
USER_CRM_PROPERTIES = ("full_name", "first_name", "last_name", "phone", "registered_at")
ACCOUNT_CRM_PROPERTIES = ("name", "mrr", "plan", "registered_at")

#: Segments every journy.io workspace starts with; the emulator cannot compute real ones.
DEFAULT_SEGMENTS: dict[str, list[dict[str, str]]] = {
    "users": [{"id": "emulator-segment-all-users", "name": "All users"}],
    "accounts": [{"id": "emulator-segment-all-accounts", "name": "All accounts"}],
}

#: Bound on remembered events, so a long benchmark against the emulator cannot exhaust memory.
MAX_EVENTS = 100_000

#: Bound on remembered browser calls (``"frontend"``), for the same reason.
MAX_FRONTEND_CALLS = 10_000

Ident = dict[str, str]


def utc_now() -> str:
    """The current time as the ISO-8601 UTC string the state view uses everywhere."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Profile:
    key: int
    primary: str | None
    secondary: str | None
    properties: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


class _Profiles:
    """Users or accounts, found by their primary ID (userId, accountId) or their secondary one (email, domain)."""

    def __init__(self, primary: str, secondary: str) -> None:
        self.primary_name = primary
        self.secondary_name = secondary
        self.records: dict[int, _Profile] = {}
        self.by_primary: dict[str, int] = {}
        self.by_secondary: dict[str, int] = {}
        self._keys = itertools.count(1)

    def find(self, ident: Mapping[str, Any]) -> _Profile | None:
        primary = ident.get(self.primary_name)
        secondary = ident.get(self.secondary_name)
        if primary is not None:
            key = self.by_primary.get(primary)
            if key is not None:
                return self.records[key]
        if secondary is not None:
            key = self.by_secondary.get(secondary)
            if key is not None:
                record = self.records[key]
                # An email (domain) only merges into a record that has no other primary ID: two users may share
                # an email, and journy.io keys on the user ID when there is one.
                if primary is None or record.primary is None:
                    return record
        return None

    def find_or_create(self, ident: Mapping[str, Any], now: str) -> _Profile:
        record = self.find(ident)
        if record is None:
            record = _Profile(next(self._keys), None, None, created_at=now, updated_at=now)
            self.records[record.key] = record
        primary = ident.get(self.primary_name)
        secondary = ident.get(self.secondary_name)
        if primary is not None and record.primary is None:
            record.primary = primary
            self.by_primary[primary] = record.key
        if secondary is not None and secondary != record.secondary:
            if record.secondary is not None and self.by_secondary.get(record.secondary) == record.key:
                del self.by_secondary[record.secondary]
            record.secondary = secondary
            self.by_secondary[secondary] = record.key
        return record

    def delete(self, ident: Mapping[str, Any]) -> _Profile | None:
        record = self.find(ident)
        if record is None:
            return None
        del self.records[record.key]
        if record.primary is not None and self.by_primary.get(record.primary) == record.key:
            del self.by_primary[record.primary]
        if record.secondary is not None and self.by_secondary.get(record.secondary) == record.key:
            del self.by_secondary[record.secondary]
        return record

    def ident(self, key: int) -> Ident:
        record = self.records[key]
        ident: Ident = {}
        if record.primary is not None:
            ident[self.primary_name] = record.primary
        if record.secondary is not None:
            ident[self.secondary_name] = record.secondary
        return ident

    def view(self) -> list[dict[str, Any]]:
        return [
            {
                self.primary_name: record.primary,
                self.secondary_name: record.secondary,
                "properties": copy.deepcopy(record.properties),
                "createdAt": record.created_at,
                "updatedAt": record.updated_at,
            }
            for record in self.records.values()
        ]


def _only(ident: Mapping[str, Any], names: tuple[str, str]) -> Ident:
    return {name: ident[name] for name in names if isinstance(ident.get(name), str)}


class Store:
    """The emulated workspace: every method expects an already validated body."""

    def __init__(self) -> None:
        self.users = _Profiles("userId", "email")
        self.accounts = _Profiles("accountId", "domain")
        # (account key, user key) -> {"status": "active" | "removed", "updatedAt": ...}
        self.memberships: dict[tuple[int, int], dict[str, str]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.event_names: dict[str, str] = {}
        self.links: dict[str, dict[str, Any]] = {}
        #: The browser's journy(...) calls sent by the emulator's tracker script, checked (see ``frontend.py``).
        self.frontend: deque[dict[str, Any]] = deque(maxlen=MAX_FRONTEND_CALLS)
        self._event_ids = itertools.count(1)

    @staticmethod
    def _merge(record: _Profile, properties: Mapping[str, Any], rejected: Mapping[str, str], now: str) -> None:
        for name, value in properties.items():
            if name in rejected:
                continue
            if value is None:
                record.properties.pop(name, None)
            else:
                # Arrays are copied so the log's copy of the request body and the state never alias.
                record.properties[name] = list(value) if isinstance(value, list) else value
        record.updated_at = now

    def upsert_user(self, body: Mapping[str, Any], rejected: Mapping[str, str]) -> dict[str, str]:
        """Creates or updates a user; ``null`` deletes a property. Returns the rejected properties."""
        return self._upsert(self.users, body, rejected)

    def upsert_account(self, body: Mapping[str, Any], rejected: Mapping[str, str]) -> dict[str, str]:
        """Creates or updates an account; ``null`` deletes a property. Returns the rejected properties."""
        return self._upsert(self.accounts, body, rejected)

    def _upsert(self, profiles: _Profiles, body: Mapping[str, Any], rejected: Mapping[str, str]) -> dict[str, str]:
        now = utc_now()
        record = profiles.find_or_create(body["identification"], now)
        properties = body.get("properties") or {}
        self._merge(record, properties, rejected, now)
        return {name: reason for name, reason in rejected.items() if name in properties}

    def delete_user(self, body: Mapping[str, Any]) -> None:
        """Deletes a user and its memberships; its events and links stay, as history."""
        record = self.users.delete(body["identification"])
        if record is not None:
            for pair in [pair for pair in self.memberships if pair[1] == record.key]:
                del self.memberships[pair]

    def delete_account(self, body: Mapping[str, Any]) -> None:
        """Deletes an account and its memberships."""
        record = self.accounts.delete(body["identification"])
        if record is not None:
            for pair in [pair for pair in self.memberships if pair[0] == record.key]:
                del self.memberships[pair]

    def set_members(self, body: Mapping[str, Any], status: str) -> None:
        """Adds (``status="active"``) or removes (``"removed"``) users; removed users stay, marked removed."""
        now = utc_now()
        account = self.accounts.find_or_create(body["account"], now)
        for entry in body["users"]:
            user = self.users.find_or_create(entry["identification"], now)
            self.memberships[(account.key, user.key)] = {"status": status, "updatedAt": now}

    def track(self, body: Mapping[str, Any], *, deprecated: bool) -> None:
        """Records an event as sent; the emulator does not attach it to profiles."""
        ident = body["identification"]
        user, account = ident.get("user"), ident.get("account")
        name = body["name"]
        if name not in self.event_names:
            self.event_names[name] = f"emulator-event-{len(self.event_names) + 1}"
        self.events.append(
            {
                "id": next(self._event_ids),
                "name": name,
                "user": _only(user, ("userId", "email")) if user else None,
                "account": _only(account, ("accountId", "domain")) if account else None,
                "triggeredAt": body.get("triggeredAt"),
                "metadata": dict(body.get("metadata") or {}),
                "receivedAt": utc_now(),
                "deprecated": deprecated,
            }
        )

    def link(self, body: Mapping[str, Any]) -> None:
        """Links a device (the ``__journey`` cookie) to a user; linking again moves the device."""
        device_id = body["deviceId"]
        self.links[device_id] = {
            "deviceId": device_id,
            "user": _only(body["identification"], ("userId", "email")),
            "linkedAt": utc_now(),
        }

    def list_events(self) -> list[dict[str, Any]]:
        """``GET /events``: the distinct event names received so far, each with a stable ID."""
        return [{"id": event_id, "name": name} for name, event_id in self.event_names.items()]

    def list_properties(self, kind: str) -> list[dict[str, Any]]:
        """``GET /properties/{kind}``: the CRM properties plus every property name stored so far."""
        profiles, builtin = (
            (self.users, USER_CRM_PROPERTIES) if kind == "users" else (self.accounts, ACCOUNT_CRM_PROPERTIES)
        )
        names = dict.fromkeys(builtin)
        for record in profiles.records.values():
            names.update(dict.fromkeys(record.properties))
        return [{"name": name, "label": name.replace("_", " ").capitalize(), "isComputed": False} for name in names]

    def record_frontend(self, entries: list[dict[str, Any]]) -> None:
        """Remembers browser calls, already checked, in the order the page made them."""
        self.frontend.extend(entries)

    def snapshot(self, events_limit: int | None = None) -> dict[str, Any]:
        """A deep copy of everything, in the JSON shape of ``GET /_emulator/state``.

        ``events_limit`` keeps only the latest events and browser calls, for the page, which refreshes often.
        """
        memberships = [
            {
                "account": self.accounts.ident(account_key),
                "user": self.users.ident(user_key),
                "status": entry["status"],
                "updatedAt": entry["updatedAt"],
            }
            for (account_key, user_key), entry in self.memberships.items()
        ]
        return {
            "users": self.users.view(),
            "accounts": self.accounts.view(),
            "memberships": memberships,
            "events": copy.deepcopy(_latest(self.events, events_limit)),
            "links": copy.deepcopy(list(self.links.values())),
            "frontend": copy.deepcopy(_latest(self.frontend, events_limit)),
        }


def _latest(items: deque[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The last ``limit`` items (all when None), oldest first."""
    if not limit:
        return list(items)
    return list(itertools.islice(reversed(items), limit))[::-1]
