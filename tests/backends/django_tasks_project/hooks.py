"""The ON_FAILURE callback of the tests: appends one JSON line per failed operation to JOURNY_TEST_FAILURES."""

from __future__ import annotations

import json
import os

from journy_core.operations import Operation


def record_failure(operation: Operation, error: BaseException) -> None:
    line = {
        "kind": operation.kind,
        "payload": dict(operation.payload),
        "error": type(error).__name__,
        "status": getattr(error, "status", None),
        "pid": os.getpid(),
    }
    with open(os.environ["JOURNY_TEST_FAILURES"], "a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")
