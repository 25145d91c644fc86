# mypy: disable-error-code="import-untyped"
"""``manage.py journy_sync``: send every user, account and membership to journy.io, paced and resumable.

A soft-deleted user or account (``JOURNY["USER_DELETED"]`` / ``["ACCOUNT_DELETED"]``) is sent as a delete, and a
soft-deleted account's members are not added.

The plan (stages, options, checkpoint file, progress and summary, exit codes) is :mod:`journy_core.sync_plan`,
shared with ``flask journy sync``; this command parses its arguments and streams each stage from a queryset ordered
by primary key (bounded memory at any size).

    manage.py journy_sync                      # users, accounts and memberships
    manage.py journy_sync --users --since 2026-01-01
    manage.py journy_sync --accounts --dry-run
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, models, router
from django.db.models.constants import LOOKUP_SEP
from django.test.utils import override_settings

from journy_core.bulk import Item, default_since_field, missing_since_field, parse_since, stage_items
from journy_core.sync_plan import (
    DEFAULT_BATCH_SIZE,
    OPTION_HELP,
    StageSource,
    SyncOptions,
    SyncPlanError,
    SyncUsageError,
    check_options,
    run_sync,
    select_stages,
    sync_client,
)
from journy_core.sync_state import app_label

from ...conf import JournyConfigurationError, base_url, journy_settings
from ...identity import account_model, save_operation, soft_deleted
from ...sync import membership_operations, should_sync

Items = Callable[[Iterator[models.Model], str], Iterator[Item]]


def _parse_since(value: str | datetime | None) -> datetime | None:
    # Read in handle(), not as the argument's argparse type: run_from_argv parses outside its CommandError
    # handler, so an error there would end in a traceback instead of one line naming the accepted formats.
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_since(value)
    except ValueError as exc:
        raise SyncUsageError(f"--since {exc}.") from None


def _setting(name: str) -> str:
    return f"JOURNY[{name!r}]"


class Command(BaseCommand):  # type: ignore[misc]
    help = "Send every user and account (with their members) to journy.io, paced and resumable."
    # The system checks run in handle(): a dry run sends nothing, so it runs without an API key (journy.E001).
    requires_system_checks: list[str] = []  # noqa: RUF012 - Django's documented class attribute

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--skip-checks", action="store_true", help="Skip system checks.")
        parser.add_argument("--users", action="store_true", help=OPTION_HELP["--users"])
        parser.add_argument("--accounts", action="store_true", help=OPTION_HELP["--accounts"])
        parser.add_argument("--since", metavar="DATE", help=OPTION_HELP["--since"])
        parser.add_argument("--since-field", metavar="FIELD", help=OPTION_HELP["--since-field"])
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=OPTION_HELP["--batch-size"])
        parser.add_argument("--dry-run", action="store_true", help=OPTION_HELP["--dry-run"])
        parser.add_argument("--state-file", metavar="PATH", help=OPTION_HELP["--state-file"])
        parser.add_argument("--restart", action="store_true", help=OPTION_HELP["--restart"])

    def handle(self, *args: Any, **options: Any) -> None:
        if not options.get("skip_checks"):
            self._check(dry_run=options["dry_run"])
        try:
            self._sync(options)
        except SyncPlanError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        except JournyConfigurationError as exc:
            raise CommandError(str(exc)) from None

    def _check(self, *, dry_run: bool) -> None:
        if not dry_run:
            self.check()
            return
        silenced = [*settings.SILENCED_SYSTEM_CHECKS, "journy.E001"]
        with override_settings(SILENCED_SYSTEM_CHECKS=silenced):
            self.check()

    def _sync(self, options: dict[str, Any]) -> None:
        options["since"] = _parse_since(options["since"])
        check_options(since=options["since"], since_field=options["since_field"], batch_size=options["batch_size"])
        config = journy_settings()
        url = base_url()
        stages = select_stages(options["users"], options["accounts"], unavailable=_unavailable())
        # Every stage's --since field, before anything is sent: a model without one stops the command here.
        sources = [_source(name, options) for name in stages]
        plan = SyncOptions(
            since=options["since"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            state_file=options["state_file"],
            restart=options["restart"],
        )
        client = sync_client(
            config["API_KEY"], url, enabled=config.enabled, dry_run=options["dry_run"], setting=_setting
        )
        with client:
            # Progress and notices on stderr (as flask journy sync prints them), unstyled: they are not errors.
            tell = partial(self.stderr.write, style_func=str)
            outcome = run_sync(client, sources, plan, say=self.stdout.write, tell=tell, app=_app())
        if outcome.failure_message is not None:
            raise CommandError(outcome.failure_message, returncode=outcome.exit_code)


def _unavailable() -> dict[str, str]:
    """The stages the settings cannot sync, with the reason."""
    config = journy_settings()
    missing: dict[str, str] = {}
    if not config["SYNC_USERS"]:
        missing["users"] = f"{_setting('SYNC_USERS')} is False"
    if account_model() is None:
        missing["accounts"] = missing["memberships"] = f"{_setting('ACCOUNT_MODEL')} is not set"
    elif config["ACCOUNT_MEMBERS"] is None:
        missing["memberships"] = f"{_setting('ACCOUNT_MEMBERS')} is not set"
    return missing


def _app() -> str:
    """The label the checkpoint file keeps of this app: its models and their database (never a password); the same
    whichever stages a run syncs."""
    user_model, accounts = get_user_model(), account_model()
    alias = router.db_for_read(user_model)
    database = connections[alias].settings_dict
    where = ":".join(str(part) for part in (database.get("HOST"), database.get("PORT")) if part)
    labels = ", ".join(model._meta.label for model in (user_model, accounts) if model is not None)
    on = f" at {where}" if where else ""
    return app_label(labels, f"the {connections[alias].vendor} database {database.get('NAME')}{on}")


def _source(name: str, options: dict[str, Any]) -> StageSource:
    """One stage's rows, from its model's default manager in primary-key order."""
    model: type[models.Model] | None = get_user_model() if name == "users" else account_model()
    assert model is not None  # select_stages leaves out the stages of a model that is not set
    since = _since_filter(model, options["since"], options["since_field"])
    items: Items = _memberships if name == "memberships" else _upserts

    def queryset(after: str | None) -> Any:
        rows = model._default_manager.order_by("pk")
        if since is not None:
            rows = rows.filter(**since)
        if after is not None:
            rows = rows.filter(pk__gt=_key(model, after))
        return rows

    def stream(after: str | None) -> Iterable[Item]:
        return items(queryset(after).iterator(chunk_size=max(options["batch_size"], 100)), model._meta.label)

    return StageSource(
        name,
        count=lambda after: int(queryset(after).count()),
        items=stream,
        since_field=options["since_field"] or (_default_since_field(model) if since is not None else None),
        check_key=lambda after: _key(model, after),
    )


def _key(model: type[models.Model], key: str) -> Any:
    """A checkpoint's key as the model's primary key; ValueError when it cannot be one."""
    try:
        return model._meta.pk.to_python(key)
    except ValidationError as exc:
        raise ValueError("; ".join(exc.messages)) from None


def _default_since_field(model: type[models.Model]) -> str | None:
    return default_since_field(f.name for f in model._meta.get_fields())


def _since_filter(model: type[models.Model], since: datetime | None, named: str | None) -> dict[str, Any] | None:
    """The filter ``--since`` puts on ``model`` (None without ``--since``): its field, a date or datetime field
    (or a path to one, such as ``profile__updated_at``), on or after ``since``."""
    if since is None:
        return None
    path = named or _default_since_field(model)
    if path is None:
        raise SyncUsageError(missing_since_field(model._meta.label))
    field, many = _resolve(model, path)
    if not isinstance(field, models.DateField):  # DateTimeField is one too
        problem = f"{model._meta.label}.{path} is a {type(field).__name__}, not a date or datetime field"
        hint = "name a timestamp field with --since-field" if named is None else "name a date or datetime field"
        raise SyncUsageError(f"--since-field {path!r}: {problem}; {hint}.")
    # A date field holds whole days: compare with the UTC day, never later than asked.
    value: Any = since if isinstance(field, models.DateTimeField) else since.astimezone(timezone.utc).date()
    if many:  # a to-many path would repeat a row once per related row: select the keys instead
        keys = model._default_manager.filter(**{f"{path}__gte": value}).values("pk")
        return {"pk__in": keys}
    return {f"{path}__gte": value}


def _resolve(model: type[models.Model], path: str) -> tuple[Any, bool]:
    """The field at the end of a lookup ``path``, and whether the path crosses a to-many relation."""
    many = False
    field: Any = None
    current: Any = model
    for part in path.split(LOOKUP_SEP):
        if current is None:
            raise SyncUsageError(f"--since-field {path!r}: {field.name} is not a relation.")
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist as exc:
            raise SyncUsageError(f"--since-field {path!r}: {exc}") from None
        many = many or bool(field.many_to_many or field.one_to_many)
        current = field.related_model if field.is_relation else None
    return field, many


def _upserts(rows: Iterator[models.Model], what: str) -> Iterator[Item]:
    # A soft-deleted row (USER_DELETED / ACCOUNT_DELETED) is sent as its delete.
    return stage_items(rows, _pk, lambda obj: [save_operation(obj)] if should_sync(obj) else [], what=what)


def _memberships(rows: Iterator[models.Model], what: str) -> Iterator[Item]:
    # A soft-deleted account's delete was sent by the accounts stage: adding its members would revive it.
    return stage_items(
        rows,
        _pk,
        lambda account: [] if soft_deleted(account) or not should_sync(account) else membership_operations(account),
        what=what,
    )


def _pk(obj: models.Model) -> str:
    return str(obj.pk)
