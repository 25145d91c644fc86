"""The emulator's options: accepted keys and their permissions, rate limit, latency, faults, websites.

Every option is checked here, once, whether it comes from ``Emulator(...)``, :meth:`Emulator.configure`, the
``/_emulator/config`` view or the command line, so each entry point refuses a bad value with the same message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALL_FAULT_KINDS",
    "ALL_PERMISSIONS",
    "CONFIGURABLE",
    "DEFAULT_API_KEY",
    "DEFAULT_TRACKER_ID",
    "FAULT_KINDS",
    "Options",
    "Website",
    "check_api_keys",
    "check_disabled_keys",
    "check_websites",
    "fingerprint",
    "is_loopback",
]

#: Every permission a journy.io API key can hold; the default key has them all.
ALL_PERMISSIONS: tuple[str, ...] = (
    "TrackData",
    "GetTrackingSnippet",
    "ReadEvents",
    "ReadProperties",
    "ReadSegments",
)

#: The emulator's own development key. Not a secret: it only opens the emulator, and it is printed on start.
DEFAULT_API_KEY = "journy-emulator-key"

#: The faults the emulator injects by default, the transient failures a client must survive (see ``Emulator``).
FAULT_KINDS: tuple[str, ...] = ("5xx", "429", "timeout", "reset")
#: Every fault that can be asked for: also ``"500"``, journy.io's own JSON 500 alone (``"5xx"`` also answers the
#: HTML or empty 502 and 503 of a gateway, which the official SDKs report as unknown errors).
ALL_FAULT_KINDS: tuple[str, ...] = (*FAULT_KINDS, "500")

#: The options another process may change through ``POST /_emulator/config`` (API keys stay in code).
CONFIGURABLE: frozenset[str] = frozenset(
    {
        "rate_limit",
        "rate_window",
        "latency",
        "fault_rate",
        "faults",
        "timeout_delay",
        "seed",
        "rejected_properties",
        "websites",
        # Accepted here although it is a secret: the view never shows it back (only whether one is set).
        "verification_secret",
    }
)


@dataclass(frozen=True)
class Website:
    """A website the snippet endpoint knows; ``tracking_domain=None`` points the snippet at the emulator."""

    domain: str
    tracker_id: str
    tracking_domain: str | None = None


def _number(name: str, value: float | None, default: float, minimum: float, maximum: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a number between {minimum} and {maximum}, not {value!r}")
    return float(value)


def _rate_limit(value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rate_limit must be a positive integer, not {value!r}")
    return value


def _fault_names(faults: Iterable[str] | str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(faults, str):
        faults = [name.strip() for name in faults.split(",") if name.strip()]
    names = default if faults is None else tuple(dict.fromkeys(faults))
    unknown = [name for name in names if name not in ALL_FAULT_KINDS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {list(ALL_FAULT_KINDS)}")
    if not names:
        raise ValueError(f"faults must name at least one of {list(ALL_FAULT_KINDS)}")
    return names


def _rejected(value: Mapping[str, str] | None, default: Mapping[str, str]) -> Mapping[str, str]:
    if value is None:
        return default
    rejected = dict(value)
    if not all(isinstance(name, str) and isinstance(reason, str) for name, reason in rejected.items()):
        raise ValueError("rejected_properties must map property names to reasons (strings)")
    return rejected


@dataclass(frozen=True)
class Options:
    """The options every call reads; frozen and swapped whole, so a call reads one consistent set without a lock."""

    rate_limit: int = 1800
    rate_window: float = 60.0
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    timeout_delay: float = 30.0
    rejected_properties: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def updated(
        self,
        *,
        rate_limit: int | None = None,
        rate_window: float | None = None,
        latency: float | None = None,
        fault_rate: float | None = None,
        faults: Iterable[str] | str | None = None,
        timeout_delay: float | None = None,
        rejected_properties: Mapping[str, str] | None = None,
    ) -> Options:
        """These options with the given ones changed (``None`` keeps one); an invalid value raises ValueError."""
        # Checked in this order so that, of several bad values, the same one is reported as it always was.
        limit = _rate_limit(rate_limit, self.rate_limit)
        names = _fault_names(faults, self.faults)
        rejected = _rejected(rejected_properties, self.rejected_properties)
        return Options(
            rate_limit=limit,
            rate_window=_number("rate_window", rate_window, self.rate_window, 0.001, 86400.0),
            latency=_number("latency", latency, self.latency, 0.0, 3600.0),
            fault_rate=_number("fault_rate", fault_rate, self.fault_rate, 0.0, 1.0),
            faults=names,
            timeout_delay=_number("timeout_delay", timeout_delay, self.timeout_delay, 0.0, 3600.0),
            rejected_properties=rejected,
        )

    def view(self) -> dict[str, Any]:
        """The options as JSON-ready data, as ``/_emulator/config`` shows them."""
        return {
            "rate_limit": self.rate_limit,
            "rate_window": self.rate_window,
            "latency": self.latency,
            "fault_rate": self.fault_rate,
            "faults": list(self.faults),
            "timeout_delay": self.timeout_delay,
            "rejected_properties": dict(self.rejected_properties),
        }

    def summary(self) -> str:
        """One line for the live page."""
        return (
            f"rate limit {self.rate_limit} per {self.rate_window:g} s, latency {self.latency:g} s, "
            f"fault rate {self.fault_rate:g} ({', '.join(self.faults)})"
        )


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key, so logs can tell keys apart without ever holding one."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def _check_permissions(permissions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(permissions, str):
        raise TypeError("permissions must be an iterable of permission names, not a string")
    wanted = tuple(dict.fromkeys(permissions))
    unknown = [name for name in wanted if name not in ALL_PERMISSIONS]
    if unknown:
        # A typo here would otherwise surface as a puzzling 401 in some test much later.
        raise ValueError(f"unknown permission(s) {unknown}; known: {list(ALL_PERMISSIONS)}")
    return wanted


def check_api_keys(api_keys: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Each key with its checked permissions; an empty key or an unknown permission raises ValueError."""
    keys = {str(key): _check_permissions(perms) for key, perms in api_keys.items()}
    if any(key == "" for key in keys):
        raise ValueError("an API key must not be empty")
    return keys


#: The tracker ID of a website given by its domain alone (``--website acme.com``).
DEFAULT_TRACKER_ID = "emulator-tracker"

_WEBSITE_FIELDS = frozenset(field.name for field in dataclasses.fields(Website))


def _website(value: Website | str | Mapping[str, Any]) -> Website:
    if isinstance(value, str):
        site = Website(value, DEFAULT_TRACKER_ID)
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - _WEBSITE_FIELDS)
        if unknown or "domain" not in value:
            raise ValueError(f"a website is a domain or {{'domain', 'tracker_id'?, 'tracking_domain'?}}, not {value!r}")
        site = Website(value["domain"], value.get("tracker_id", DEFAULT_TRACKER_ID), value.get("tracking_domain"))
    elif isinstance(value, Website):
        site = value
    else:
        raise TypeError(f"a website is a domain, a mapping or a Website, not {type(value).__name__}")
    domain = site.domain
    # A host name as journy.io registers a site (localhost included), never a URL: the snippet endpoint matches it.
    if not isinstance(domain, str) or not domain or any(ch.isspace() or ch in "/:@" for ch in domain):
        raise ValueError(f"a website's domain is a host name such as acme.com, not {domain!r}")
    if not isinstance(site.tracker_id, str) or not site.tracker_id:
        raise ValueError(f"the tracker_id of {domain} must be a non-empty string")
    if site.tracking_domain is not None and not isinstance(site.tracking_domain, str):
        raise ValueError(f"the tracking_domain of {domain} must be a URL string or None")
    return site


def check_websites(websites: Iterable[Website | str | Mapping[str, Any]]) -> dict[str, Website]:
    """The websites by lower-cased domain, the way the snippet endpoint looks them up.

    Each is a :class:`Website`, a domain (tracker ID :data:`DEFAULT_TRACKER_ID`, snippet pointing at the
    emulator) or a mapping of Website's fields, as the ``/_emulator/config`` view takes them.
    """
    if isinstance(websites, str | Mapping):
        raise TypeError("websites must be a list of domains or websites, not a single one")
    sites = [_website(value) for value in websites]
    return {site.domain.lower(): site for site in sites}


def check_disabled_keys(keys: Iterable[str]) -> frozenset[str]:
    """The keys journy.io knows but has disabled: every API call with one answers 403."""
    if isinstance(keys, str):
        raise TypeError("disabled_keys must be an iterable of keys, not a string")
    disabled = frozenset(keys)
    if not all(isinstance(key, str) and key for key in disabled):
        raise ValueError("a disabled key must be a non-empty string")
    return disabled


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) can only be reached from this machine."""
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
