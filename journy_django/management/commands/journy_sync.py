# mypy: disable-error-code="import-untyped"
"""``manage.py journy_sync``: send every user and account (and memberships) to journy.io.

The daily full sync journy.io recommends, next to the after-commit sync. It streams each table ordered by primary
key (bounded memory at any size), paces the calls under the key's rate limit, prints progress with an ETA, and
records the last key done in ``--state-file`` so that an interrupted run, started again, resumes after it.

    manage.py journy_sync                      # users, accounts and memberships
    manage.py journy_sync --users --since 2026-01-01
    manage.py journy_sync --accounts --dry-run
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

from journy_core import Client
from journy_core.bulk import (
    SINCE_FIELDS,
    BulkSync,
    ProgressReport,
    SyncSummary,
    default_since_field,
    missing_since_field,
    parse_since,
    since_scope,
)
from journy_core.operations import Operation

from ...conf import JournyConfigurationError, base_url, journy_settings
from ...identity import account_model, upsert_operation
from ...sync import membership_operations, should_sync


def _parse_since(value: str) -> datetime:
    try:
        return parse_since(value)
    except ValueError as exc:
        raise CommandError(f"--since {exc}.") from None


class Command(BaseCommand):  # type: ignore[misc]
    help = "Send every user and account (with their members) to journy.io, paced and resumable."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", action="store_true", help="sync users (default: users and accounts)")
        parser.add_argument("--accounts", action="store_true", help="sync accounts and their memberships")
        parser.add_argument(
            "--since",
            type=_parse_since,
            metavar="DATE",
            help="only rows changed (or created) since DATE: YYYY-MM-DD or an ISO 8601 datetime (UTC without offset)",
        )
        parser.add_argument(
            "--since-field",
            metavar="F",
            help=f"the field --since filters on (default: the first of {', '.join(SINCE_FIELDS)} the model has)",
        )
        parser.add_argument("--batch-size", type=int, default=100, help="rows per checkpoint (default 100)")
        parser.add_argument("--dry-run", action="store_true", help="build every call but send nothing")
        parser.add_argument(
            "--state-file",
            default=".journy_sync_state.json",
            help="where the checkpoint is kept, to resume an interrupted run (default .journy_sync_state.json)",
        )
        parser.add_argument("--restart", action="store_true", help="ignore the checkpoint and start from the top")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            config = journy_settings()
            client = self._client(options["dry_run"])
        except JournyConfigurationError as exc:
            raise CommandError(str(exc)) from None
        if not config.enabled and not options["dry_run"]:
            raise CommandError("JOURNY['ENABLED'] is False: nothing is sent (use --dry-run to try the sync).")
        if options["since_field"] and options["since"] is None:
            raise CommandError("--since-field needs --since.")
        both = not options["users"] and not options["accounts"]
        accounts = account_model()
        if options["accounts"] and accounts is None:
            raise CommandError("--accounts needs JOURNY['ACCOUNT_MODEL'].")
        plan: list[tuple[str, type[models.Model], Any]] = []
        if (both or options["users"]) and config["SYNC_USERS"]:
            plan.append(("users", get_user_model(), self._upserts))
        if (both or options["accounts"]) and accounts is not None:
            plan.append(("accounts", accounts, self._upserts))
            if config["ACCOUNT_MEMBERS"] is not None:
                plan.append(("memberships", accounts, self._memberships))
        # The --since field of every model, before anything is sent: a model without one stops the command here.
        since_fields = {model: self._since_field(model, options) for _, model, _ in plan}
        self._last_progress = 0.0
        bulk = BulkSync(
            client,
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            state_file=options["state_file"],
            progress=self._progress,
        )
        if options["restart"]:
            bulk.forget("users", "accounts", "memberships")
        summaries = [
            self._sync_model(bulk, name, model, since_fields[model], options, items) for name, model, items in plan
        ]
        client.close()
        failed = sum(summary.failed for summary in summaries)
        for summary in summaries:
            resumed = f", resumed after {summary.resumed_from}" if summary.resumed_from else ""
            verb = "would send" if summary.dry_run else "sent"
            self.stdout.write(
                f"{summary.name}: {verb} {summary.sent}, failed {summary.failed}, skipped {summary.skipped} "
                f"in {summary.seconds:.1f} s{resumed}"
            )
        if failed:
            raise CommandError(f"{failed} call(s) failed (see the log); run the command again to resume.")

    def _client(self, dry_run: bool) -> Client:
        config = journy_settings()
        key = config["API_KEY"]
        if not key:
            if dry_run:
                return Client("dry-run", base_url=base_url())
            raise JournyConfigurationError("JOURNY['API_KEY'] is not set: journy_sync has nothing to send with.")
        return Client(key, base_url=base_url())

    @staticmethod
    def _since_field(model: type[models.Model], options: dict[str, Any]) -> str | None:
        """The field ``--since`` filters ``model`` on (None without ``--since``)."""
        if options["since"] is None:
            return None
        field = options["since_field"] or default_since_field(f.name for f in model._meta.get_fields())
        if field is None:
            raise CommandError(missing_since_field(model._meta.label))
        try:  # resolves the lookup (a field, or a path such as profile__updated_at) without running a query
            model._default_manager.filter(**{f"{field}__gte": options["since"]})
        except FieldError as exc:
            raise CommandError(f"--since-field {field!r}: {exc}") from None
        return field

    @staticmethod
    def _queryset(
        model: type[models.Model], since_field: str | None, options: dict[str, Any], after: str | None
    ) -> Any:
        queryset = model._default_manager.order_by("pk")
        if since_field is not None:
            queryset = queryset.filter(**{f"{since_field}__gte": options["since"]})
        if after is not None:
            queryset = queryset.filter(pk__gt=model._meta.pk.to_python(after))
        return queryset

    def _sync_model(
        self,
        bulk: BulkSync,
        name: str,
        model: type[models.Model],
        since_field: str | None,
        options: dict[str, Any],
        items: Any,
    ) -> SyncSummary:
        # A checkpoint is resumed only by a run with the same --since and field (see journy_core.bulk).
        scope = since_scope(options["since"], since_field)
        notice = bulk.resume_notice(name, scope)
        if notice is not None:
            self.stdout.write(notice)
        after = bulk.resume_after(name, scope)
        queryset = self._queryset(model, since_field, options, after)
        total = queryset.count()
        self.stdout.write(f"{name}: {total} to go" + (f" (resuming after {after})" if after else ""))
        rows = queryset.iterator(chunk_size=max(options["batch_size"], 100))
        return bulk.run(name, items(rows), total, scope=scope)

    @staticmethod
    def _upserts(rows: Iterator[models.Model]) -> Iterator[tuple[str, Operation | None]]:
        for obj in rows:
            yield str(obj.pk), upsert_operation(obj) if should_sync(obj) else None

    @staticmethod
    def _memberships(rows: Iterator[models.Model]) -> Iterator[tuple[str, Operation | None]]:
        for account in rows:
            found = False
            for operation in membership_operations(account):
                found = True
                yield str(account.pk), operation
            if not found:
                yield str(account.pk), None

    def _progress(self, report: ProgressReport) -> None:
        now = time.monotonic()
        finished = report.total is not None and report.done >= report.total
        if now - self._last_progress < 2.0 and not finished:
            return
        self._last_progress = now
        total = f"/{report.total}" if report.total is not None else ""
        eta = f", about {report.eta_seconds:.0f} s left" if report.eta_seconds and not finished else ""
        self.stdout.write(f"  {report.name}: {report.done}{total} done, {report.failed} failed{eta}")
