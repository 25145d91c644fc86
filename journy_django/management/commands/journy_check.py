# mypy: disable-error-code="import-untyped"
"""``manage.py journy_check``: is this project ready to send data to journy.io?

Runs the journy system checks, then asks journy.io (or the emulator ``JOURNY_API_URL`` points at) what the API key
may do, and, when ``WEBSITE_DOMAIN`` is set, fetches the website's snippet. Exits with status 1 on any error
(errors of the checks, a refused key, a missing permission), so deploy pipelines can run it. With the ``outbox``
backend it also reports the rows waiting, the oldest one's age and the dead rows (a warning, not an error).
"""

from __future__ import annotations

from typing import Any

from django.core.checks import ERROR, CheckMessage
from django.core.management.base import BaseCommand, CommandError, CommandParser

from journy_core import Client, JournyError, Tracker
from journy_core.diagnostics import check_api_key

from ...checks import ALL_CHECKS
from ...conf import JournyConfigurationError, base_url, journy_settings
from ...outbox_sync import check_outbox_table, outbox_backlog


class Command(BaseCommand):  # type: ignore[misc]
    help = "Check the journy.io configuration and validate the API key against the API."
    # It runs journy's checks itself and lists each once: Django's run before the command would print them twice.
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's documented class attribute

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--offline", action="store_true", help="only check the settings; do not call the API")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = 0
        messages: list[CheckMessage] = [message for check in ALL_CHECKS for message in check()]
        messages.extend(check_outbox_table())
        for message in messages:
            style = self.style.ERROR if message.level >= ERROR else self.style.WARNING
            self.stdout.write(style(f"{message.id}: {message.msg}"))
            if message.hint:
                self.stdout.write(f"    hint: {message.hint}")
            problems += message.level >= ERROR
        if not messages:
            self.stdout.write(self.style.SUCCESS("Settings: OK"))
        if not problems:
            self._report_outbox()
        if not options["offline"] and not problems:
            problems += self._check_api()
        if problems:
            raise CommandError(f"journy_check found {problems} problem(s).")
        self.stdout.write(self.style.SUCCESS("journy.io is ready."))

    def _report_outbox(self) -> None:
        """With the outbox backend: the rows waiting, the oldest one's age, and the dead ones; in the warning
        colour when rows are dead or the oldest is over 10 minutes old (not a problem that fails the command:
        the admin retries or purges dead rows)."""
        try:
            backlog = outbox_backlog()
        except Exception as exc:  # the table missing (W005 says so), the database away
            self.stdout.write(self.style.WARNING(f"Outbox: could not be read ({exc})."))
            return
        if backlog is None:
            return
        age = "" if backlog.oldest_pending_age is None else f", the oldest {backlog.oldest_pending_age:.0f} s old"
        line = f"Outbox: {backlog.pending} pending{age}; {backlog.dead} dead."
        late = (backlog.oldest_pending_age or 0) > 600
        self.stdout.write(self.style.WARNING(line) if backlog.dead or late else line)

    def _check_api(self) -> int:
        try:
            config = journy_settings()
            url = base_url()
        except JournyConfigurationError as exc:
            self.stdout.write(self.style.ERROR(str(exc)))
            return 1
        key = config["API_KEY"]
        if not key:
            self.stdout.write("No JOURNY['API_KEY']: the API key was not checked.")
            return 0
        website = config["WEBSITE_DOMAIN"]
        with Client(key, base_url=url) as client:
            report = check_api_key(client, needs_snippet=bool(website))
            self.stdout.write(f"API: {url}")
            if report.permissions:
                self.stdout.write(f"Key permissions: {', '.join(report.permissions)}")
            if report.calls_remaining is not None:
                self.stdout.write(f"Calls remaining in the rate-limit window: {report.calls_remaining}")
            if not report.ok:
                self.stdout.write(self.style.ERROR(f"API key: {report.problem}"))
                return 1
            self.stdout.write(self.style.SUCCESS("API key: OK"))
            if website:
                try:
                    tracker = Tracker.from_snippet(str(client.get_tracking_snippet(website).data["snippet"]))
                except (JournyError, ValueError, KeyError, TypeError) as exc:
                    self.stdout.write(self.style.ERROR(f"Snippet of {website!r}: {exc}"))
                    return 1
                self.stdout.write(self.style.SUCCESS(f"Snippet of {website!r}: tracker {tracker.tracker_id}"))
        return 0
