"""A local emulator of the journy.io REST API, for development, demos, tests and benchmarks.

It serves every endpoint of the API contract on the loopback interface, checks requests the way journy.io does,
keeps what it receives in memory, and can be told to misbehave (rate limits, 5xx, timeouts, connection resets)
so that a client's retry logic can be exercised without touching journy.io. Standard library only.

In tests::

    from journy_core.emulator import Emulator, DEFAULT_API_KEY

    with Emulator() as emu:
        client = Client(DEFAULT_API_KEY, base_url=emu.url)
        ...
        assert emu.state()["users"][0]["userId"] == "42"

From a shell: ``python -m journy_core.emulator --port 8484``, then open http://127.0.0.1:8484/.
"""

from .emulator import Emulator
from .options import ALL_PERMISSIONS, DEFAULT_API_KEY, FAULT_KINDS, Website

__all__ = ["ALL_PERMISSIONS", "DEFAULT_API_KEY", "FAULT_KINDS", "Emulator", "Website"]
