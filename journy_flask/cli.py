"""``flask journy check`` and ``flask journy sync``.

``check`` asks journy.io what the API key may do and checks the configuration; it exits 1 when something would
stop data from arriving. ``sync`` runs the bulk-sync plan of :mod:`journy_core.sync_plan` (stages, options,
checkpoint file, progress and summary, exit codes: shared with ``manage.py journy_sync``); this module parses its
options and streams each stage from SQLAlchemy, ordered by primary key in batches (bounded memory). ``--since`` is
a WHERE in the query, so the count and the checkpoint see the same rows. A soft-deleted user or account
(``JOURNY_USER_DELETED`` / ``JOURNY_ACCOUNT_DELETED``) is sent as its delete, and gets no member added."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import partial
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from journy_core import operations as ops
from journy_core.bulk import Item, default_since_field, missing_since_field, parse_since, stage_items
from journy_core.diagnostics import check_api_key
from journy_core.operations import Operation
from journy_core.sync_plan import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
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
from journy_core.urls import resolve_base_url

from .identities import account_id_of, account_operation, member_ids, soft_deleted, user_operation, wants_sync
from .outbox_cli import outbox_check, outbox_group, relay_command
from .settings import Settings
from .state import JournyState, get_state, session_target

try:
    from sqlalchemy import func, select
    from sqlalchemy import inspect as sa_inspect
    from sqlalchemy.orm import selectinload
except ImportError:  # SQLAlchemy is optional; `sync` says so when it is missing
    pass

__all__ = ["journy_cli"]


@click.group("journy", help="journy.io: check the configuration, sync users and accounts, relay the outbox.")
def journy_cli() -> None:
    pass


journy_cli.add_command(relay_command)
journy_cli.add_command(outbox_group)


def _state() -> JournyState:
    return get_state()


@journy_cli.command("check", help="Check the API key against journy.io and the JOURNY_* configuration.")
@with_appcontext
def check_command() -> None:
    state = _state()
    settings = state.settings
    errors: list[str] = []
    warnings: list[str] = []
    base_url = resolve_base_url(settings.api_url)
    click.echo(f"journy.io API:       {base_url}")
    backend = (settings.queue or {}).get("BACKEND", "thread")
    click.echo(f"queue backend:       {backend}{'' if settings.enabled else ' (disabled)'}")
    if not settings.enabled:
        warnings.append("JOURNY_ENABLED is False: nothing is sent and pages carry no snippet")
    _check_key(state, errors)
    _check_tracker(state, errors, warnings)
    outbox_check(state, errors, warnings)
    _check_models_and_secrets(settings, base_url, warnings)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    for error in errors:
        click.echo(f"error: {error}", err=True)
    if errors:
        sys.exit(1)
    click.echo("OK: journy.io is reachable with this key" if settings.api_key else "OK")


def _check_models_and_secrets(settings: Settings, base_url: str, warnings: list[str]) -> None:
    """Print the synced models; warn about a snippet without verification, nothing synced, a local API URL."""
    if (settings.tracker is not None or settings.website_domain) and settings.verification_secret is None:
        warnings.append(
            "JOURNY_VERIFICATION_SECRET is not set: identify/account calls carry no verification hash, which "
            "journy.io refuses once identity verification is on"
        )
    for label, model in (("user model", settings.user_model), ("account model", settings.account_model)):
        if model is not None:
            click.echo(f"{label + ':':<20} {model.__module__}.{model.__qualname__}")
    if settings.user_model is None and settings.account_model is None:
        warnings.append("no JOURNY_USER_MODEL / JOURNY_ACCOUNT_MODEL: users and accounts are not synced")
    if not current_app.debug and ("127.0.0.1" in base_url or "localhost" in base_url):
        warnings.append(f"the API URL {base_url} is local (the emulator?) while debug is off")


def _check_key(state: JournyState, errors: list[str]) -> None:
    """Call journy.io with the key: print its permissions and calls left, or say what is wrong with it."""
    settings = state.settings
    if settings.api_key is None:
        errors.append("JOURNY_API_KEY is not set: copy the API key from journy.io's settings (Connections)")
        return
    with state.client() as client:
        report = check_api_key(
            client,
            needs_snippet=settings.tracker is None and settings.website_domain is not None,
            key_setting="JOURNY_API_KEY",
        )
    if report.permissions:
        click.echo(f"key permissions:     {', '.join(report.permissions)}")
    if report.calls_remaining is not None:
        click.echo(f"calls remaining:     {report.calls_remaining} (of {report.rate_limit} a minute)")
    if not report.ok:
        errors.append(report.problem or "the API key does not work")


def _check_tracker(state: JournyState, errors: list[str], warnings: list[str]) -> None:
    """Print the tracker the snippet loads (configured, or fetched by website domain), or what is missing."""
    settings = state.settings
    if settings.tracker is not None:
        click.echo(f"tracker:             {settings.tracker.tracker_id} from {settings.tracker.script_url}")
    elif settings.website_domain is not None:
        tracker = state.tracker_cache.wait() if state.tracker_cache is not None else None
        if tracker is None:
            errors.append(f"the snippet of JOURNY_WEBSITE_DOMAIN={settings.website_domain!r} could not be fetched")
        else:
            click.echo(f"tracker:             {tracker.tracker_id} (fetched for {settings.website_domain})")
    else:
        warnings.append("no tracker: set JOURNY_TRACKER_ID and JOURNY_TRACKER_DOMAIN for {{ journy_snippet() }}")


@dataclass(frozen=True)
class _Since:
    """A ``--since`` filter on one model: ``column >= value``, the value converted for the column's type."""

    field: str
    column: Any
    value: Any
    since: datetime


def _since_filter(model: type, since: datetime | None, since_field: str | None) -> _Since | None:
    """The ``--since`` filter of ``model`` (None without ``--since``); a usage error when it has no such column."""
    if since is None:
        return None
    columns: Any = sa_inspect(model).column_attrs
    field = since_field or default_since_field(columns.keys())
    if field is None:
        raise click.UsageError(missing_since_field(model.__name__))
    if field not in columns:
        raise click.BadParameter(f"{field!r} is not a column of {model.__name__}", param_hint="'--since-field'")
    column_type = columns[field].expression.type
    try:
        python_type: Any = column_type.python_type
    except NotImplementedError:  # a custom type: compare with the datetime as given
        python_type = None
    # In UTC: SQLite drops an offset and compares the wall-clock times, so two spellings of one instant would
    # select other rows.
    value: Any = since.astimezone(timezone.utc)
    if python_type is datetime:
        if not getattr(column_type, "timezone", False):  # a naive column holds UTC: compare with naive UTC
            value = value.replace(tzinfo=None)
    elif python_type is date:
        value = since.astimezone(timezone.utc).date()  # the whole day: never less than asked
    elif python_type is not None:
        problem = f"{model.__name__}.{field} is not a date or datetime column"
        if since_field is None:  # a default name on a column of another type
            raise click.UsageError(f"--since: {problem}; name its timestamp column with --since-field.")
        raise click.BadParameter(problem, param_hint="'--since-field'")
    return _Since(field, getattr(model, field), value, since)


def _conditions(model: type, after: str | None, since: _Since | None) -> list[Any]:
    """The WHERE of a sync query: the rows changed since ``--since``, after the checkpoint's key."""
    conditions: list[Any] = []
    if since is not None:
        conditions.append(since.column >= since.value)
    if after is not None:
        conditions.append(_pk_column(model) > _key_value(model, after))
    return conditions


def _rows(
    session: Any,
    model: type,
    after: str | None,
    batch_size: int,
    *,
    since: _Since | None = None,
    load_members: str | None = None,
) -> Iterator[Any]:
    """The rows of ``model`` after the primary key ``after`` (and changed since ``since``), in key order,
    ``batch_size`` at a time."""
    pk = _pk_column(model)
    statement: Any = select(model).where(*_conditions(model, after, since)).order_by(pk)
    if load_members is not None:
        statement = statement.options(selectinload(getattr(model, load_members)))
    result = session.execute(statement.execution_options(yield_per=batch_size))
    for row in result.scalars():
        yield row
        if sa_inspect(row).session is not None:
            session.expunge(row)  # keep the identity map small: memory stays bounded by the batch size


def _pk_column(model: type) -> Any:
    keys: Any = sa_inspect(model).primary_key
    if len(keys) != 1:
        raise click.ClickException(f"{model.__name__} has a composite primary key; flask journy sync needs one column")
    return keys[0]


def _key_value(model: type, key: str) -> Any:
    column = _pk_column(model)
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return key
    return python_type(key) if python_type in (int, str, uuid.UUID) else key


def _count(session: Any, model: type, after: str | None, since: _Since | None = None) -> int:
    statement: Any = select(func.count()).select_from(model).where(*_conditions(model, after, since))
    return int(session.execute(statement).scalar_one())


def _session(state: Any) -> Any:
    target = session_target(current_app, state.settings)
    if target is None:
        raise click.ClickException("no SQLAlchemy session: init Flask-SQLAlchemy before Journy, or set JOURNY_SESSION")
    return target()


def _key(model: type, row: Any) -> str:
    return str(getattr(row, _pk_column(model).key))


def _parse_since_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@journy_cli.command("sync", help="Send every user, account and membership to journy.io (paced, resumable).")
@click.option("--users", "only_users", is_flag=True, help=OPTION_HELP["--users"])
@click.option("--accounts", "only_accounts", is_flag=True, help=OPTION_HELP["--accounts"])
@click.option("--since", metavar="DATE", callback=_parse_since_option, help=OPTION_HELP["--since"])
@click.option("--since-field", metavar="FIELD", help=OPTION_HELP["--since-field"])
@click.option(
    "--batch-size", default=DEFAULT_BATCH_SIZE, type=click.IntRange(1, MAX_BATCH_SIZE), help=OPTION_HELP["--batch-size"]
)
@click.option("--dry-run", is_flag=True, help=OPTION_HELP["--dry-run"])
@click.option("--state-file", metavar="PATH", type=click.Path(dir_okay=False), help=OPTION_HELP["--state-file"])
@click.option("--restart", is_flag=True, help=OPTION_HELP["--restart"])
@with_appcontext
def sync_command(
    only_users: bool,
    only_accounts: bool,
    since: datetime | None,
    since_field: str | None,
    batch_size: int,
    dry_run: bool,
    state_file: str | None,
    restart: bool,
) -> None:
    options = SyncOptions(since=since, batch_size=batch_size, dry_run=dry_run, state_file=state_file, restart=restart)
    try:
        _sync(only_users, only_accounts, since_field, options)
    except SyncUsageError as exc:
        raise click.UsageError(str(exc)) from None
    except SyncPlanError as exc:  # as a ClickException prints it, with the plan's exit code (1, or 130)
        click.echo(f"Error: {exc}", err=True)
        click.get_current_context().exit(exc.exit_code)


def _sync(only_users: bool, only_accounts: bool, since_field: str | None, options: SyncOptions) -> None:
    check_options(since=options.since, since_field=since_field, batch_size=options.batch_size)
    state = _state()
    settings = state.settings
    stages = select_stages(only_users, only_accounts, unavailable=_unavailable(settings))
    session = _session(state)
    # Every stage's --since column, before anything is sent: a model without one stops the command here.
    sources = [_source(state, session, name, options, since_field) for name in stages]
    client = sync_client(
        settings.api_key, settings.api_url, enabled=settings.enabled, dry_run=options.dry_run, setting=_setting
    )
    with client:
        tell = partial(click.echo, err=True)
        outcome = run_sync(client, sources, options, say=click.echo, tell=tell, app=_app(settings, session))
    if outcome.failure_message is not None:
        raise SyncPlanError(outcome.failure_message)


def _app(settings: Any, session: Any) -> str:
    """The label the checkpoint file keeps of this app: its models and their database (never a password); the same
    whichever stages a run syncs."""
    models = (settings.user_model, settings.account_model)
    labels = ", ".join(f"{model.__module__}.{model.__name__}" for model in models if model is not None)
    url = session.get_bind().url
    where = ":".join(str(part) for part in (url.host, url.port) if part)
    on = f" at {where}" if where else ""
    return app_label(labels, f"the {url.get_backend_name()} database {url.database}{on}")


def _setting(name: str) -> str:
    return f"JOURNY_{name}"


def _unavailable(settings: Any) -> dict[str, str]:
    """The stages the configuration cannot sync, with the reason."""
    missing: dict[str, str] = {}
    if settings.user_model is None:
        missing["users"] = f"{_setting('USER_MODEL')} is not set"
    elif not settings.sync_users:  # JOURNY_SYNC_USERS, new with the shared configuration
        missing["users"] = f"{_setting('SYNC_USERS')} is False"
    if settings.account_model is None:
        missing["accounts"] = missing["memberships"] = f"{_setting('ACCOUNT_MODEL')} is not set"
    elif settings.account_members is None:
        missing["memberships"] = f"{_setting('ACCOUNT_MEMBERS')} is not set"
    return missing


def _source(state: Any, session: Any, name: str, options: SyncOptions, since_field: str | None) -> StageSource:
    """One stage's rows, streamed from its model in primary-key order."""
    settings = state.settings
    model: type = settings.user_model if name == "users" else settings.account_model
    since = _since_filter(model, options.since, since_field)
    return StageSource(
        name,
        count=lambda after: _count(session, model, after, since),
        items=lambda after: _operations(state, session, name, model, after, options.batch_size, since),
        since_field=since.field if since is not None else None,
        check_key=lambda after: _key_value(model, after),
    )


def _operations(
    state: Any, session: Any, name: str, model: Any, after: str | None, batch_size: int, since: _Since | None = None
) -> Iterator[Item]:
    settings = state.settings
    members = settings.account_members if name == "memberships" else None

    def operations(row: Any) -> list[Operation]:
        deleted = soft_deleted(settings, row)  # sent as its delete; a soft-deleted account gets no member added
        if not wants_sync(settings, row) or (deleted and name == "memberships"):
            return []
        if name in ("users", "accounts"):
            build = user_operation if name == "users" else account_operation
            operation = build(settings, row, delete=deleted)  # None: the row has no ID yet
            return [operation] if operation is not None else []
        users = member_ids(settings, row)
        return [ops.add_users_to_account(account_id=account_id_of(settings, row), users=users)] if users else []

    rows = _rows(session, model, after, batch_size, since=since, load_members=members)
    return stage_items(rows, lambda row: _key(model, row), operations, what=f"{model.__module__}.{model.__name__}")
