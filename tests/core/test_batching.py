"""``journy_core.batching``: what one request queues leaves as one message, for backends that cross a process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

import pytest

from journy_core import Journy, Operation
from journy_core.backends.base import Backend
from journy_core.backends.simple import MemoryBackend
from journy_core.batching import batch, close_batch, open_batch


class MessageBackend(Backend):
    """A backend that crosses a process boundary: each call is one message (a list of kinds)."""

    name = "messages"
    sends_batches: ClassVar[bool] = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: list[list[str]] = []

    def enqueue(self, operation: Operation) -> None:
        self.messages.append([operation.kind])

    def enqueue_many(self, operations: Iterable[Operation]) -> None:
        self.messages.append([operation.kind for operation in operations])


def _journy() -> tuple[Journy, MessageBackend]:
    journy = Journy(queue={"BACKEND": f"{__name__}.MessageBackend"})
    backend = journy.backend
    assert isinstance(backend, MessageBackend)
    return journy, backend


def test_what_a_batch_collects_leaves_as_one_message_in_order_when_the_block_ends() -> None:
    journy, backend = _journy()
    assert journy.batches is True
    with batch():
        journy.upsert_user(user_id="1")
        journy.enqueue(Operation("link", {"deviceId": "d", "identification": {"userId": "1"}}))
        journy.enqueue_many([Operation("upsert_account", {"identification": {"accountId": "7"}})])
        journy.track("joined", user_id="1", account_id="7")
        assert backend.messages == []
    assert backend.messages == [["upsert_user", "link", "upsert_account", "track"]]
    journy.track("later", user_id="1")
    assert backend.messages[-1] == ["track"]  # after the block: at once, on its own


def test_a_block_that_raises_still_sends_what_it_collected() -> None:
    journy, backend = _journy()

    def view() -> None:
        with batch():
            journy.track("before_the_error", user_id="1")
            journy.track("also_before", user_id="1")
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        view()
    assert backend.messages == [["track", "track"]]


def test_outside_a_batch_operations_made_together_are_one_message_and_one_operation_is_one() -> None:
    journy, backend = _journy()
    journy.enqueue_many(
        [
            Operation("upsert_user", {"identification": {"userId": "1"}}),
            Operation("delete_user", {"identification": {"userId": "1"}}),
        ]
    )
    journy.enqueue_many([])
    journy.track("alone", user_id="1")
    assert backend.messages == [["upsert_user", "delete_user"], ["track"]]


def test_a_nested_batch_sends_its_own_operations_when_it_ends_and_the_outer_one_goes_on() -> None:
    journy, backend = _journy()
    with batch():
        journy.track("outer_1", user_id="1")
        with batch():
            journy.upsert_user(user_id="2")
        assert backend.messages == [["upsert_user"]]
        journy.track("outer_2", user_id="1")
    assert backend.messages == [["upsert_user"], ["track", "track"]]


def test_closing_twice_sends_once_and_a_closed_batch_collects_nothing() -> None:
    journy, backend = _journy()
    opened = open_batch()
    journy.track("in", user_id="1")
    assert backend.messages == []  # held until the batch closes
    close_batch(opened)
    close_batch(opened)
    journy.track("out", user_id="1")
    assert backend.messages == [["track"], ["track"]]


def test_an_asyncio_task_and_the_threads_it_hands_work_to_share_its_batch() -> None:
    journy, backend = _journy()

    async def view() -> None:
        with batch():
            journy.track("on_the_loop", user_id="1")
            await asyncio.to_thread(journy.track, "in_a_thread", user_id="1")  # the context is copied
            journy.track("back_on_the_loop", user_id="1")

    asyncio.run(view())
    assert backend.messages == [["track", "track", "track"]]


def test_in_process_backends_never_batch_even_inside_a_batch() -> None:
    journy = Journy(queue={"BACKEND": "memory"})
    assert journy.batches is False
    backend = journy.backend
    assert isinstance(backend, MemoryBackend)
    with batch():
        journy.track("at_once", user_id="1")
        assert [operation.kind for operation in backend.operations] == ["track"]
    assert Journy("key").batches is False  # the default thread backend


def test_a_batch_that_keeps_collecting_sends_every_max_batch_operations_instead_of_holding_them() -> None:
    from journy_core.batching import MAX_BATCH

    journy, backend = _journy()
    with batch():
        for number in range(MAX_BATCH + 5):
            journy.track(f"event_{number}", user_id="1")
        assert [len(message) for message in backend.messages] == [MAX_BATCH]
    assert [len(message) for message in backend.messages] == [MAX_BATCH, 5]
