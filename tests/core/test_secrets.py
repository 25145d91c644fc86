"""No secret in error reports: the API key and the verification secret never show in a ``repr``, an error message,
a traceback's local variables (what Django's debug page and error trackers such as Sentry print) or a log record.

Every check looks for distinctive values, so that any form of a leak (a ``repr``, ``bytes``, a slice) is found.
``report_of`` and ``log_report`` are shared with the Django and Flask tests of the same behaviour.
"""

from __future__ import annotations

import logging
import os
import pprint
import traceback
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from journy_core import Client, InvalidArgumentError, Journy, Tracker, verification_hash, worker
from journy_core import operations as ops
from journy_core.config import DJANGO_SOURCE, read_config
from journy_core.emulator import ALL_PERMISSIONS, DEFAULT_API_KEY, Emulator
from journy_core.secrets import Secret, SecretBytes, redact
from journy_core.snippet import render_snippet
from journy_core.urls import resolve_base_url
from journy_flask.settings import read_settings

KEY = "KEY-7f3a9c-SHOULD-NOT-LEAK"
SECRET = "SECRET-b81e2d-SHOULD-NOT-LEAK"
#: The distinctive middle of each value: found even in a slice, a ``bytes`` repr or an escaped form.
MARKERS = ("7f3a9c", "b81e2d")
PACKAGES = ("journy_core", "journy_django", "journy_flask")

#: API keys that cannot be sent as a header, and the words their error must say.
UNSENDABLE_KEYS = [
    (KEY + "\nX-Injected: 1", "line break"),
    (KEY + "\r\nX-Injected: 1", "line break"),
    (KEY.replace("-", "\t", 1), "control character"),
    (KEY.replace("-", "\x00", 1), "control character"),
    (KEY.replace("-", "\u2019", 1), "non-ASCII"),
    (KEY.replace("-", "\u00a0", 1), "non-ASCII"),
    (KEY.replace("-", " ", 1), "space"),
]


def leaked(text: str) -> list[str]:
    """The markers of the key or the secret found in ``text``."""
    return [marker for marker in MARKERS if marker in text]


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions a report shows with it: causes, and contexts not suppressed by ``from None``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def _ours(frame: FrameType) -> bool:
    """Whether ``frame`` runs journy's code (the test's own frames hold the raw values they pass in)."""
    return any(f"{os.sep}{package}{os.sep}" in frame.f_code.co_filename for package in PACKAGES)


def report_of(error: BaseException) -> str:
    """What an error report shows of ``error``: each message, and every local variable of each of journy's frames
    formatted as Django's debug page does (``pprint.pformat``: ``repr`` for objects, recursing into containers)."""
    parts = []
    for exc in _chain(error):
        parts.append(f"{type(exc).__name__}: {exc}")
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            if _ours(frame):
                parts.append(f"{frame.f_code.co_name}: {pprint.pformat(dict(frame.f_locals))}")
    return "\n".join(parts)


def raised(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises."""
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("nothing was raised")


def log_report(records: list[logging.LogRecord]) -> str:
    """Everything a log handler or an error tracker's logging integration takes from ``records``: the message, its
    arguments, the extra attributes, and the logged exception with its frames' local variables."""
    parts = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(pprint.pformat(record.args))
        parts.append(pprint.pformat({k: v for k, v in vars(record).items() if k not in ("exc_info", "args")}))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
            parts.append(report_of(record.exc_info[1]))
    return "\n".join(parts)


def held(obj: object) -> str:
    """The ``repr`` and ``str`` of ``obj``, of its attributes, and of the variables its functions close over: what
    a debugger, an object inspector or a tracker that captures attributes shows."""
    parts = [repr(obj), str(obj)]
    attributes = vars(obj) if hasattr(obj, "__dict__") else {}
    parts.append(pprint.pformat(attributes))
    for value in attributes.values():
        for cell in getattr(value, "__closure__", None) or ():
            parts.append(repr(cell.cell_contents))
    return "\n".join(parts)


def test_a_secret_is_the_same_str_with_a_redacted_repr() -> None:
    key = Secret(KEY)
    assert key == KEY and isinstance(key, str) and hash(key) == hash(KEY)
    assert str(key) == KEY  # a str stays equal to itself: headers and HMAC use it unchanged
    assert repr(key) == "Secret('**********')"
    assert leaked(pprint.pformat({"API_KEY": key, "list": [key], "tuple": (key,)})) == []
    assert leaked(f"{key!r} {[key]} {SecretBytes(SECRET.encode())!r}") == []
    assert redact(key) is key and redact(None) is None
    assert isinstance(redact(b"x"), SecretBytes)


def test_client_and_journy_hold_the_key_only_redacted(emulator: Emulator) -> None:
    emulator.configure(api_keys={KEY: ALL_PERMISSIONS})
    try:
        # A key read from a file or an environment variable with its line end: stripped, and sent as it is.
        with Client(f"  {KEY}\n", base_url=emulator.url) as client:
            assert leaked(held(client)) == []
            assert client.track("read_a_key_file", user_id="1").status == 201
    finally:
        emulator.configure(api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})
    for backend in ("thread", "sync", "memory"):
        journy = Journy(KEY, base_url=emulator.url, queue={"BACKEND": backend})
        try:
            assert leaked(held(journy)) == [], backend
            assert leaked(held(journy.backend)) == [], backend
        finally:
            journy.close(timeout=1)


def test_a_worker_configured_with_a_key_holds_it_only_redacted(emulator: Emulator) -> None:
    saved = list(worker._factories)
    try:
        worker.configure_worker(api_key=KEY, base_url=emulator.url)
        [factory] = worker._factories
        assert leaked(held(factory)) == []
        assert leaked(held(worker.worker_client())) == []
    finally:
        worker.close_clients()
        worker._factories[:] = saved


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: Journy(KEY, base_url="ftp://journy.example.com"), id="Journy-bad-url"),
        pytest.param(lambda: Journy(KEY, queue={"BACKEND": "no-such-backend"}), id="Journy-bad-backend"),
        pytest.param(lambda: Client(KEY, timeout=-1), id="Client-bad-timeout"),
        pytest.param(lambda: Client(KEY, base_url="ftp://journy.example.com"), id="Client-bad-url"),
        pytest.param(lambda: verification_hash(SECRET, 1.5), id="verification_hash-bad-identifier"),
        pytest.param(
            lambda: render_snippet(
                Tracker("t", "https://go.acme.test"), verification_secret=Secret(SECRET), user_id=1.5
            ),
            id="render_snippet-bad-user-id",
        ),
    ],
)
def test_a_traceback_through_journy_shows_no_secret_in_any_frame(call: Callable[[], object]) -> None:
    report = report_of(raised(call))
    assert "Error" in report  # the report is there, with its frames
    assert leaked(report) == [], report


@pytest.mark.parametrize(("key", "problem"), UNSENDABLE_KEYS)
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda key: Client(key), id="Client"),
        pytest.param(lambda key: Journy(key), id="Journy-thread"),
        pytest.param(lambda key: Journy(key, queue={"BACKEND": "memory"}), id="Journy-memory"),
        pytest.param(lambda key: worker.configure_worker(api_key=key), id="configure_worker"),
    ],
)
def test_an_api_key_that_cannot_be_sent_is_refused_saying_what_is_wrong_not_what_it_is(
    build: Callable[[str], object], key: str, problem: str
) -> None:
    saved = list(worker._factories)
    try:
        error = raised(lambda: build(key))
    finally:
        worker._factories[:] = saved
    assert isinstance(error, InvalidArgumentError)
    assert error.argument == "api_key"
    assert problem in str(error)
    assert leaked(report_of(error)) == []


def test_no_log_record_at_debug_carries_the_key_or_the_secret(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: journy's, urllib3's, the emulator's
    retry = {"OPTIONS": {"RETRY": {"base": 0.01, "cap": 0.05, "max_attempts": 3, "max_age": 30}}}
    emulator.configure(api_keys={KEY: ALL_PERMISSIONS})
    saved = list(worker._factories)
    try:
        journy = Journy(KEY, base_url=emulator.url, queue=retry)
        journy.upsert_user(user_id="1", email="ada@acme.test")
        journy.track("created_invoice", user_id="1", metadata={"amount": 1})
        assert journy.flush(timeout=10)
        render_snippet(Tracker("t", "https://go.acme.test"), verification_secret=SECRET, user_id="1")
        worker.configure_worker(api_key=KEY, base_url=emulator.url)
        assert worker.deliver(ops.track("ran_in_a_worker", user_id="1")).outcome == "sent"
        emulator.configure(fault_rate=1.0, faults="5xx")  # retried, then given up on
        journy.track("failed_with_5xx", user_id="1")
        assert journy.flush(timeout=10)
        emulator.configure(fault_rate=0.0, api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})  # the key is now refused
        journy.track("failed_with_401", user_id="1")
        assert journy.flush(timeout=10)
        journy.close(timeout=2)
        for key, _ in UNSENDABLE_KEYS[:2]:  # whether refused at once or at delivery, no log line may show it
            try:
                broken = Journy(key, base_url=emulator.url)
            except InvalidArgumentError:
                continue
            broken.track("never_sent", user_id="1")
            broken.close(timeout=5)
    finally:
        worker.close_clients()
        worker._factories[:] = saved
        emulator.configure(fault_rate=0.0, api_keys={DEFAULT_API_KEY: ALL_PERMISSIONS})
    names = [e["name"] for e in emulator.state()["events"]]
    assert "created_invoice" in names and "ran_in_a_worker" in names  # the flow really ran
    assert any(r.levelno >= logging.WARNING for r in caplog.records)  # and its failures were logged
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert leaked(log_report(caplog.records)) == []


@pytest.mark.parametrize(
    "url",
    [
        f"http://{KEY}@127.0.0.1:9",
        f"http://user:{KEY}@127.0.0.1:9",
        f"http://127.0.0.1:9/?api_key={KEY}",
        f"http://127.0.0.1:9/#{KEY}",
        f"127.0.0.1:9/?api_key={KEY}",  # no scheme: the message showed it whole
        f"user:{KEY}@127.0.0.1",  # no "//": the credentials parse as a path
        f"http://[::1/{KEY}",  # unparseable: a ValueError naming nothing, before
    ],
)
def test_an_api_url_carrying_a_key_by_mistake_is_held_redacted_and_refused_without_showing_it(url: str) -> None:
    config = read_config({"API_KEY": "k", "API_URL": url}, DJANGO_SOURCE)
    assert config.api_url == url  # the value, as str
    assert leaked(repr(config)) == []
    flask_config = {"JOURNY_API_KEY": "k", "JOURNY_API_URL": url}
    assert leaked(repr(read_settings(flask_config))) == []
    assert leaked(repr(flask_config)) == []  # app.config: a variable of many frames
    with pytest.raises(InvalidArgumentError) as raised:
        resolve_base_url(config.api_url, argument="api_url")
    assert leaked(str(raised.value)) == []
