# mypy: disable-error-code="import-untyped"
"""``manage.py journy_relay``: deliver the outbox's rows (the ``outbox`` queue backend) from outside the app.

    manage.py journy_relay                      # until SIGTERM or SIGINT (the call in flight finishes)
    manage.py journy_relay --once               # every row pending now, then exit
    manage.py journy_relay --once --max-seconds 300

The relay is :class:`journy_core.outbox.relay.Relay`, with the options of ``JOURNY["QUEUE"]["OPTIONS"]`` (batch
size, lease, concurrency, retry, retention). Several relays (this command on several machines, and the app
processes' own relay threads) may run at once: each row is leased to one of them at a time.

``--once`` exits 0 when every row pending at its start was delivered or went dead, 1 when something deliverable is
left (``--max-seconds`` ran out, or journy.io did not answer).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.commands import relay_for, relay_options_problem, run_relay
from journy_core.outbox.relay import Relay

from ...conf import JournyConfigurationError, get_journy, worker_client
from ...outbox import DjangoStore


class Command(BaseCommand):  # type: ignore[misc]
    help = "Deliver the journy.io outbox's rows: until stopped, or with --once every row pending now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="deliver every row pending now, then exit")
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=None,
            help="with --once: stop after this long (exit 1 if rows are left)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problem = relay_options_problem(options["once"], options["max_seconds"])
        if problem is not None:
            raise CommandError(problem)
        code = run_relay(
            self._relay(), once=options["once"], max_seconds=options["max_seconds"], echo=self.stdout.write
        )
        if code:
            raise CommandError("rows are left to deliver (see the log); run the relay again.", returncode=code)

    def _relay(self) -> Relay:
        try:
            backend = get_journy().backend
        except JournyConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if not isinstance(backend, OutboxBackend):
            # Rows left from when the backend was "outbox": still worth delivering, with the default options.
            self.stderr.write(f"JOURNY['QUEUE'] is {backend.name!r}, not 'outbox': relaying with the defaults.")
            return relay_for(None, DjangoStore(), worker_client)
        if backend.client_factory is None:
            raise CommandError("No JOURNY['API_KEY']: the relay cannot call journy.io.")
        return relay_for(backend, backend.store, backend.client_factory)
