"""The direct, synchronous journy.io API client.

>>> client = Client("my-api-key")                                    # doctest: +SKIP
>>> client.upsert_user(user_id="42", email="ada@acme.com", properties={"plan": "pro"})   # doctest: +SKIP
>>> client.track("created_invoice", user_id="42", account_id="7", metadata={"amount": 100})  # doctest: +SKIP

Each call blocks until journy.io answers. Code on a request path should use :class:`journy_core.Journy` (or the
Django and Flask adapters), which queue the call and return at once.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Iterable, Mapping
from datetime import timezone, tzinfo
from typing import Any, Generic, TypeVar

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from . import operations as ops
from ._version import __version__
from .answers import Result, read_answer
from .errors import (
    ConnectionFailed,
    InvalidArgumentError,
    RequestTimeout,
)
from .operations import Operation
from .secrets import checked_api_key, redact
from .urls import resolve_base_url

__all__ = ["DEFAULT_TIMEOUT", "USER_AGENT", "Client", "Result"]

logger = logging.getLogger("journy")

#: (connect, read) seconds. Connecting is quick or hopeless; journy.io answers in well under a second.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 10.0)
USER_AGENT = (
    f"journy-python/{__version__} (+https://pypi.org/project/journy/; "
    f"python {platform.python_version()}; requests {requests.__version__})"
)

R = TypeVar("R")


class OperationMethods(Generic[R]):
    """The write calls, shared by :class:`Client` (which performs them) and ``Journy`` (which queues them).

    Arguments are validated here, by the builders in :mod:`journy_core.operations`, before any I/O.
    """

    naive_timezone: tzinfo = timezone.utc

    def _submit(self, operation: Operation) -> R:
        raise NotImplementedError

    def upsert_user(
        self,
        *,
        user_id: str | int | object = None,
        email: str | None = None,
        properties: Mapping[str, object] | None = None,
        **unknown: Any,
    ) -> R:
        """Create or update a user; a property set to ``None`` is deleted."""
        return self._submit(
            ops.upsert_user(
                user_id=user_id, email=email, properties=properties, naive_timezone=self.naive_timezone, **unknown
            )
        )

    def delete_user(self, *, user_id: str | int | object = None, email: str | None = None, **unknown: Any) -> R:
        """Delete a user from journy.io."""
        return self._submit(ops.delete_user(user_id=user_id, email=email, **unknown))

    def upsert_account(
        self,
        *,
        account_id: str | int | object = None,
        domain: str | None = None,
        properties: Mapping[str, object] | None = None,
        **unknown: Any,
    ) -> R:
        """Create or update an account (team, organisation, workspace)."""
        return self._submit(
            ops.upsert_account(
                account_id=account_id,
                domain=domain,
                properties=properties,
                naive_timezone=self.naive_timezone,
                **unknown,
            )
        )

    def delete_account(self, *, account_id: str | int | object = None, domain: str | None = None, **unknown: Any) -> R:
        """Delete an account from journy.io."""
        return self._submit(ops.delete_account(account_id=account_id, domain=domain, **unknown))

    def add_users_to_account(
        self,
        *,
        account_id: str | int | object = None,
        domain: str | None = None,
        users: Iterable[object] | None = None,
        **unknown: Any,
    ) -> R:
        """Make users members of an account. ``users`` holds user IDs or ``{"user_id": ..., "email": ...}``
        dicts, any number of them: they are sent in calls of at most 100."""
        return self._submit(ops.add_users_to_account(account_id=account_id, domain=domain, users=users, **unknown))

    def remove_users_from_account(
        self,
        *,
        account_id: str | int | object = None,
        domain: str | None = None,
        users: Iterable[object] | None = None,
        **unknown: Any,
    ) -> R:
        """Remove members from an account (journy.io keeps them, marked "removed")."""
        return self._submit(ops.remove_users_from_account(account_id=account_id, domain=domain, users=users, **unknown))

    def link(
        self,
        *,
        device_id: str | None = None,
        user_id: str | int | object = None,
        email: str | None = None,
        **unknown: Any,
    ) -> R:
        """Link a web visitor (the ``__journey`` cookie's value) to a user."""
        return self._submit(ops.link(device_id=device_id, user_id=user_id, email=email, **unknown))

    def track(
        self,
        name: str | None = None,
        *,
        user_id: str | int | object = None,
        email: str | None = None,
        account_id: str | int | object = None,
        domain: str | None = None,
        metadata: Mapping[str, object] | None = None,
        triggered_at: object = None,
        **unknown: Any,
    ) -> R:
        """Record an event (past tense: ``"created_invoice"``) for a user, an account, or a user in an account."""
        return self._submit(
            ops.track(
                name,
                user_id=user_id,
                email=email,
                account_id=account_id,
                domain=domain,
                metadata=metadata,
                triggered_at=triggered_at,
                naive_timezone=self.naive_timezone,
                **unknown,
            )
        )


def validate_timeout(timeout: object) -> float | tuple[float, float]:
    def positive(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise InvalidArgumentError(
                "timeout", f"expected seconds > 0 or a (connect, read) pair of them, got {value!r}"
            )
        return float(value)

    if isinstance(timeout, tuple) and len(timeout) == 2:
        return (positive(timeout[0]), positive(timeout[1]))
    return positive(timeout)


class Client(OperationMethods[Result]):
    """A synchronous client for every endpoint of the journy.io API, over one keep-alive HTTP session.

    :param api_key: the key from journy.io's settings (Connections). It is sent as ``X-Api-Key`` and never shown
        in a repr, a log line, an error or a traceback's local variables (it is held as a
        :class:`~journy_core.secrets.Secret`); one that cannot be sent as a header (a line break in it, say)
        raises :class:`~journy_core.InvalidArgumentError` here, saying what is wrong, not what the key is.
    :param base_url: ``https://api.journy.io`` by default; the ``JOURNY_API_URL`` environment variable overrides
        it. Plain http is refused except for loopback hosts (the local emulator).
    :param timeout: seconds, or a ``(connect, read)`` pair.
    :param naive_timezone: the timezone naive datetimes are read in (UTC by default).
    :param pool_size: how many keep-alive connections the session keeps (one per thread that uses the client).

    Success returns a :class:`Result`; an error answer raises an :class:`~journy_core.APIError` subclass; a
    transport failure raises :class:`~journy_core.RequestTimeout` or :class:`~journy_core.ConnectionFailed`.
    The client is thread-safe; close it (or use it as a context manager) to release its connections.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        naive_timezone: tzinfo = timezone.utc,
        pool_size: int = 10,
        session: requests.Session | None = None,
    ) -> None:
        api_key = redact(api_key)  # first: a traceback through this frame shows the key only redacted
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidArgumentError(
                "api_key",
                "is required: create a key in journy.io's settings (Connections) and pass it, "
                "or start the local emulator (python -m journy_core.emulator) for development",
            )
        key = checked_api_key(api_key)
        self.base_url = resolve_base_url(base_url)
        self.timeout = validate_timeout(timeout)
        self.naive_timezone = naive_timezone
        self._session = session or requests.Session()
        if session is None:
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size), max_retries=0)
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)
        self._headers = {
            "X-Api-Key": key,  # a Secret: the headers' repr (in a traceback through requests) stays redacted
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        # Proxies and CA bundle from the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE...) are read once
        # here: requests would otherwise re-read the whole environment on every call, a quarter of its cost.
        settings = self._session.merge_environment_settings(self.base_url, {}, None, None, None)
        self._send_options: dict[str, Any] = dict(settings)
        self._send_options["allow_redirects"] = False
        self._send_options["timeout"] = self.timeout
        self._urls: dict[str, str] = {}

    def __repr__(self) -> str:
        # Never the key; and no error for a half-built instance (the ``self`` of a failed __init__ in a traceback).
        return f"<journy_core.Client base_url={getattr(self, 'base_url', None)!r}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # -- reads ---------------------------------------------------------------------------------------------

    def get_api_key_details(self) -> Result:
        """The key's permissions (``result.permissions``) and remaining calls: a cheap way to test a key."""
        return self.perform(Operation("get_api_key_details"))

    def get_tracking_snippet(self, domain: str | None = None, **unknown: Any) -> Result:
        """The website snippet for ``domain`` (``result.data == {"domain": ..., "snippet": ...}``)."""
        return self.perform(ops.get_tracking_snippet(domain, **unknown))

    def list_events(self) -> Result:
        """The events journy.io knows: ``[{"id", "name", "group"?}]``."""
        return self.perform(Operation("list_events"))

    def list_user_properties(self) -> Result:
        """User properties: ``[{"name", "label", "isComputed", "group"?}]``."""
        return self.perform(Operation("list_user_properties"))

    def list_account_properties(self) -> Result:
        """Account properties: ``[{"name", "label", "isComputed", "group"?}]``."""
        return self.perform(Operation("list_account_properties"))

    def list_user_segments(self) -> Result:
        """User segments: ``[{"id", "name"}]``."""
        return self.perform(Operation("list_user_segments"))

    def list_account_segments(self) -> Result:
        """Account segments: ``[{"id", "name"}]``."""
        return self.perform(Operation("list_account_segments"))

    # -- performing ----------------------------------------------------------------------------------------

    def _submit(self, operation: Operation) -> Result:
        return self.perform(operation)

    def perform(self, operation: Operation) -> Result:
        """Send one operation (split into calls of at most 100 users for memberships) and return the answer."""
        parts = ops.split_memberships(operation)
        if len(parts) == 1:
            return self.send(operation)
        results = [self.send(part) for part in parts]
        ids = tuple(r.request_id for r in results if r.request_id)
        last = results[-1]
        return Result(
            status=last.status,
            request_id=last.request_id,
            calls_remaining=last.calls_remaining,
            rate_limit=last.rate_limit,
            data=last.data,
            rejected=last.rejected,
            request_ids=ids,
        )

    def send(self, operation: Operation) -> Result:
        """Send exactly one HTTP request for ``operation`` (no splitting, no retry)."""
        method, path = operation.method, operation.path
        started = time.perf_counter()
        try:
            response = self._session.send(self._prepare(operation), **self._send_options)
        except requests.exceptions.ConnectTimeout:
            raise RequestTimeout(
                f"connecting to {self.base_url} for {method} {path} took longer than the connect timeout"
            ) from None
        except requests.exceptions.Timeout:
            raise RequestTimeout(
                f"{method} {path}: journy.io did not answer within the read timeout; "
                "the call may or may not have been applied",
                outcome_unknown=True,
            ) from None
        except requests.exceptions.SSLError as exc:
            # The handshake comes before the request: nothing was sent.
            raise ConnectionFailed(
                f"{method} {path} to {self.base_url}: the TLS handshake failed ({_root_cause(exc)}); "
                "check the server certificate (REQUESTS_CA_BUNDLE names a custom CA bundle)"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            sent = not _never_connected(exc)
            what = "the connection was lost after the request was sent" if sent else "could not connect"
            raise ConnectionFailed(
                f"{method} {path} to {self.base_url}: {what} ({type(_root_cause(exc)).__name__})",
                outcome_unknown=sent,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailed(f"{method} {path} to {self.base_url}: {type(exc).__name__}") from None
        elapsed = time.perf_counter() - started
        return read_answer(operation, response, elapsed)

    def _prepare(self, operation: Operation) -> requests.PreparedRequest:
        method, path = operation.method, operation.path
        if method == "GET":
            return requests.Request(
                method, self.base_url + path, self._headers, params=dict(operation.payload)
            ).prepare()
        # Writes have a fixed URL per path and a JSON body: build the prepared request directly, with the URL
        # normalised once per path, instead of having requests parse and re-encode the URL on every call.
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = requests.Request(method, self.base_url + path).prepare().url or ""
        body = json.dumps(operation.payload, separators=(",", ":"), ensure_ascii=False).encode()
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(self._headers)
        prepared.headers["Content-Type"] = "application/json"
        prepared.headers["Content-Length"] = str(len(body))
        prepared.body = body
        prepared.hooks = {"response": []}
        return prepared


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while True:
        nxt = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(nxt, BaseException) or nxt is seen:
            return seen
        seen = nxt


def _never_connected(exc: BaseException) -> bool:
    """Whether the connection failed before any byte of the request was sent (so a retry cannot duplicate)."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, (NewConnectionError, ConnectTimeoutError, NameResolutionError, ConnectionRefusedError)):
            return True
        nxt = getattr(current, "reason", None) or current.__cause__ or current.__context__
        current = nxt if isinstance(nxt, BaseException) else None
    return False
