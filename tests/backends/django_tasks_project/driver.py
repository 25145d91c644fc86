"""What the tests run in a subprocess with this project's settings: ``python -m <this module> COMMAND SPEC_JSON``.

- ``enqueue``: (``migrate`` first if asked) build ``Journy(**spec["journy"])`` and enqueue ``operations(count)``
  (in one ``enqueue_many`` call when ``together``; inside ``transaction.atomic()`` when ``atomic`` is ``"commit"``
  or ``"rollback"``, from a running event loop when ``in_event_loop``); print the backend's and the worker side's
  counters, the enqueue timings, and whether the transaction survived the enqueues.
- ``wait``: poll the database task backend's table until no task is ready or running (or ``timeout`` passes);
  print every task row.
- ``configure``: try ``Journy(**case)`` for each case; print the error each raised (or none).
- ``transactions`` (with ``JOURNY_TEST_SYNC_QUEUE``): ``count`` transactions that each create a user, an
  organization and the membership (which journy.io must see after both upserts); print, per transaction, the
  operations journy_django handed to its backend, in order.
- ``requests`` (with ``JOURNY_TEST_SYNC_QUEUE``): ``count`` requests through ``JournyMiddleware`` to a view that
  creates an organization, tracks an event for it, renames it and tracks another (no transaction around them),
  then returns, raises (``"ending": "raises"``) or streams a response that tracks a third event while it is
  read (``"streams"``); print the operations each request had handed over when the view returned, in order.
- ``async_requests``: the same through the middleware's async path, to an async view.

The operations are built here without Django, so the tests import :func:`operations` to know what to expect.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from journy_core import operations as ops
from journy_core.operations import Operation


def operations(count: int) -> list[Operation]:
    """``count`` distinct operations of four kinds; each is recognised in the emulator's log by :func:`key`."""
    built = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            built.append(ops.upsert_user(user_id=f"user-{index}", properties={"index": index}))
        elif kind == 1:
            built.append(ops.track("ran_delivery_test", user_id=f"user-{index}", metadata={"index": index}))
        elif kind == 2:
            built.append(ops.upsert_account(account_id=f"account-{index}", properties={"index": index}))
        else:
            built.append(ops.add_users_to_account(account_id=f"account-{index}", users=[f"user-{index}"]))
    return built


def key(path: str, body: Any) -> tuple[str, str]:
    """What identifies one of :func:`operations` in a call: the path and the identification it carries."""
    body = body if isinstance(body, dict) else {}
    ident = body.get("identification", body.get("account"))
    return path, json.dumps(ident, sort_keys=True)


def _enqueue(spec: dict[str, Any]) -> dict[str, Any]:
    from journy_core import Journy, worker

    if spec.get("migrate"):
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    options = dict(spec["journy"])
    if options.get("timeout") is not None:
        options["timeout"] = tuple(options["timeout"])
    if options.get("on_failure"):
        from django.utils.module_loading import import_string

        options["on_failure"] = import_string(options["on_failure"])
    journy = Journy(**options)
    durations = []
    started = time.perf_counter()
    transaction_usable = None

    def enqueue_all() -> None:
        if spec.get("together"):  # made together: one task
            journy.enqueue_many(operations(spec["count"]))
            return
        for operation in operations(spec["count"]):
            before = time.perf_counter()
            journy.enqueue(operation)
            durations.append(time.perf_counter() - before)

    async def enqueue_on_the_loop() -> bool:
        enqueue_all()  # what an async view does: Journy's methods are plain calls
        return journy.flush(timeout=20)

    flushed = None
    with _transaction(spec.get("atomic")) as check:
        if spec.get("in_event_loop"):
            flushed = asyncio.run(enqueue_on_the_loop())
        else:
            enqueue_all()
        transaction_usable = check()
    total = time.perf_counter() - started
    journy.close()
    return {
        "pid": os.getpid(),
        "flushed": flushed,
        "transaction_usable": transaction_usable,
        "stats": journy.stats(),
        "worker_stats": worker.stats.snapshot(),
        "enqueue_median_ms": 1000 * statistics.median(durations) if durations else None,
        "enqueue_max_ms": 1000 * max(durations) if durations else None,
        "total_seconds": total,
    }


class _RollBack(Exception):
    pass


@contextmanager
def _transaction(mode: str | None) -> Iterator[Callable[[], bool | None]]:
    """``None``: no transaction; ``"commit"`` or ``"rollback"``: enqueue inside ``transaction.atomic()``, which
    ends that way. The callable says whether the transaction still accepts statements."""
    if mode is None:
        yield lambda: None
        return
    from django.db import connection, transaction

    def usable() -> bool:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            return False
        return True

    try:
        with transaction.atomic():
            yield usable
            if mode == "rollback":
                raise _RollBack
    except _RollBack:
        pass


def _wait(spec: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings
    from django.utils.module_loading import import_string

    model = import_string(f"{settings.DATABASE_APP}.models.DBTaskResult")
    deadline = time.monotonic() + spec["timeout"]
    while True:
        busy = model.objects.filter(status__in=["READY", "RUNNING"]).count()
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    rows = [
        {
            "status": row.status,
            "task_path": row.task_path,
            "queue_name": row.queue_name,
            "priority": row.priority,
            "kwargs": row.args_kwargs["kwargs"],
            "deferred": row.run_after is not None and row.run_after.year < 9999,
            "return_value": row.return_value,
            "traceback": row.traceback,
        }
        for row in model.objects.order_by("enqueued_at")
    ]
    return {"idle": not busy, "rows": rows}


def _configure(spec: dict[str, Any]) -> dict[str, Any]:
    from journy_core import Journy

    results = []
    for case in spec["cases"]:
        try:
            journy = Journy(**case)
        except Exception as error:
            results.append({"error": type(error).__name__, "message": str(error)})
        else:
            results.append({"error": None, "backend": type(journy.backend).__name__})
    return {"results": results}


def _recording_backend() -> list[dict[str, Any]]:
    """Record what journy_django hands to its backend (one message or several: whichever it does)."""
    from journy_django.conf import get_journy

    backend = get_journy().backend
    handed: list[dict[str, Any]] = []
    enqueue, enqueue_many = backend.enqueue, getattr(backend, "enqueue_many", None)
    inside_many: list[bool] = []  # a backend's enqueue_many may call its enqueue: record once

    def record(operation: Operation) -> None:
        if not inside_many:
            handed.append(operation.to_dict())
        enqueue(operation)

    def record_many(operations: Any) -> None:
        operations = list(operations)
        handed.extend(operation.to_dict() for operation in operations)
        assert enqueue_many is not None
        inside_many.append(True)
        try:
            enqueue_many(operations)
        finally:
            inside_many.pop()

    backend.enqueue = record  # type: ignore[method-assign]
    if enqueue_many is not None:
        backend.enqueue_many = record_many  # type: ignore[method-assign]
    return handed


def _transactions(spec: dict[str, Any]) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction

    from tests.django.testapp.models import Organization

    if spec.get("migrate", True):
        call_command("migrate", verbosity=0)
    handed = _recording_backend()
    made = []
    for index in range(spec["count"]):
        before = len(handed)
        with transaction.atomic():
            user = get_user_model().objects.create(username=f"{spec.get('tag', 'u')}-{index}", email=f"{index}@a.test")
            organization = Organization.objects.create(name=f"Team {index}")
            organization.members.add(user)
        made.append(handed[before:])
    return {"made": made}


def _requests(spec: dict[str, Any]) -> dict[str, Any]:
    from django.core.management import call_command
    from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
    from django.test import RequestFactory

    import journy_django
    from journy_django.middleware import JournyMiddleware
    from tests.django.testapp.models import Organization

    if spec.get("migrate", True):
        call_command("migrate", verbosity=0)
    handed = _recording_backend()
    ending = spec.get("ending", "returns")  # "returns", "raises" (after its work), or "streams"

    def view(request: HttpRequest) -> HttpResponseBase:
        organization = Organization.objects.create(name="New team")
        journy_django.track("created_team", account=organization)
        organization.name = "Renamed team"
        organization.save()
        journy_django.track("renamed_team", account=organization)
        if ending == "raises":
            raise RuntimeError("the view failed after its work")
        if ending != "streams":
            return HttpResponse("ok")

        def chunks() -> Iterator[bytes]:
            journy_django.track("streamed_team", account=organization)
            yield b"ok"

        return StreamingHttpResponse(chunks())

    middleware = JournyMiddleware(view)
    factory = RequestFactory()
    made, raised, after_stream = [], 0, []
    for _ in range(spec["count"]):
        before = len(handed)
        try:
            response = middleware(factory.get("/"))
        except RuntimeError:
            raised += 1
            response = None
        made.append(handed[before:])  # what the request had handed over when the view returned
        if response is not None and ending == "streams":
            before = len(handed)
            b"".join(response.streaming_content)
            after_stream.append(handed[before:])
    return {"made": made, "raised": raised, "after_stream": after_stream}


def _async_requests(spec: dict[str, Any]) -> dict[str, Any]:
    """``requests`` through an ASGI-style stack: an async view behind the middleware's async path."""
    from django.core.management import call_command
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    import journy_django
    from journy_django.middleware import JournyMiddleware
    from tests.django.testapp.models import Organization

    if spec.get("migrate", True):
        call_command("migrate", verbosity=0)
    handed = _recording_backend()

    async def view(request: HttpRequest) -> HttpResponse:
        organization = await Organization.objects.acreate(name="New team")
        journy_django.track("created_team", account=organization)
        organization.name = "Renamed team"
        await organization.asave()
        journy_django.track("renamed_team", account=organization)
        return HttpResponse("ok")

    middleware = JournyMiddleware(view)
    factory = RequestFactory()

    async def serve() -> list[list[dict[str, Any]]]:
        made = []
        for _ in range(spec["count"]):
            before = len(handed)
            await middleware(factory.get("/"))
            made.append(handed[before:])
        return made

    return {"made": asyncio.run(serve())}


def main() -> None:
    command, spec = sys.argv[1], json.loads(sys.argv[2])
    if command != "configure" or spec.get("setup", True):
        import django

        django.setup()
    commands = {
        "enqueue": _enqueue,
        "wait": _wait,
        "configure": _configure,
        "transactions": _transactions,
        "requests": _requests,
        "async_requests": _async_requests,
    }
    result = commands[command](spec)
    sys.stdout.write("JOURNY-RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
