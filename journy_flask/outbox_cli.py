"""``flask journy relay`` and ``flask journy outbox list|retry|purge``: the ``outbox`` backend from the command line.

    flask journy relay                       # until SIGTERM or SIGINT (the call in flight finishes)
    flask journy relay --once                # every row pending now, then exit (1 if something is left)
    flask journy relay --once --max-seconds 300
    flask journy outbox list [--dead] [--limit 50]
    flask journy outbox retry [ID ...]       # dead rows (these, or all) pending again
    flask journy outbox purge [--older-than-days 7]

The relay is :class:`journy_core.outbox.relay.Relay` with the options of ``JOURNY_QUEUE["OPTIONS"]``; several
relays (this command on several machines, and the app processes' relay threads) may run at once.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import click
from flask import current_app
from flask.cli import with_appcontext

from journy_core import ConfigurationError, assembly
from journy_core.outbox.backend import OutboxBackend
from journy_core.outbox.commands import backlog_report, relay_for, relay_options_problem, run_relay
from journy_core.outbox.store import DEAD, PENDING, OutboxStore

from .state import JournyState, get_state

__all__ = ["outbox_check", "outbox_group", "relay_command"]

RELAY_COMMAND = "flask journy relay"
LIST_COMMAND = "flask journy outbox list --dead"


def _backend(state: JournyState) -> OutboxBackend | None:
    backend = state.journy.backend
    return backend if isinstance(backend, OutboxBackend) else None


def _store(state: JournyState) -> OutboxStore:
    """The app's outbox store; when the backend is no longer ``outbox``, one on the watched session's engine, so
    rows left from before are still delivered or inspected."""
    backend = _backend(state)
    if backend is not None:
        return backend.store
    from .outbox import fallback_store  # noqa: PLC0415 - needs SQLAlchemy, which only this case does

    try:
        return fallback_store(current_app, state.settings)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("relay", help="Deliver the outbox's rows: until stopped, or with --once every row pending now.")
@click.option("--once", is_flag=True, help="Deliver every row pending now, then exit (1 when rows are left).")
@click.option("--max-seconds", type=float, default=None, help="With --once: stop after this long.")
@with_appcontext
def relay_command(once: bool, max_seconds: float | None) -> None:
    problem = relay_options_problem(once, max_seconds)
    if problem is not None:
        raise click.UsageError(problem)
    state = get_state()
    backend = _backend(state)
    if backend is None:
        click.echo("JOURNY_QUEUE is not 'outbox': relaying the rows left with the default options.", err=True)
    store = _store(state)
    if state.settings.api_key is None:
        raise click.ClickException("JOURNY_API_KEY is not set: the relay cannot call journy.io.")
    settings = state.settings
    client_factory = backend.client_factory if backend is not None else None
    relay = relay_for(backend, store, client_factory or (lambda: assembly.worker_client(settings)))
    sys.exit(run_relay(relay, once=once, max_seconds=max_seconds, echo=click.echo))


@click.group("outbox", help="List, retry and purge the outbox's rows (JOURNY_QUEUE = {'BACKEND': 'outbox'}).")
def outbox_group() -> None:
    pass


@outbox_group.command("list", help="The oldest pending (or, with --dead, dead) rows.")
@click.option("--dead", is_flag=True, help="Dead rows: refused by journy.io, or out of retries.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@with_appcontext
def list_command(dead: bool, limit: int) -> None:
    state = get_state()
    store = _store(state)
    backlog = store.backlog(now=datetime.now(timezone.utc))
    click.echo(f"{backlog.pending} pending, {backlog.dead} dead")
    for row in store.list_rows(status=DEAD if dead else PENDING, limit=limit):
        error = f"  {row.last_error[:200]}" if row.last_error else ""
        click.echo(
            f"#{row.id} {row.kind} {row.entity or '-'} attempts={row.attempts} "
            f"created={row.created_at:%Y-%m-%d %H:%M:%S} next={row.next_attempt_at:%Y-%m-%d %H:%M:%S}{error}"
        )


@outbox_group.command("retry", help="Make dead rows (these IDs, or all) pending again.")
@click.argument("ids", nargs=-1, type=int)
@with_appcontext
def retry_command(ids: tuple[int, ...]) -> None:
    count = _store(get_state()).retry_dead(list(ids) if ids else None)
    click.echo(f"{count} dead row(s) pending again.")


@outbox_group.command("purge", help="Delete dead rows (and kept delivered rows) older than some days, or all.")
@click.option("--older-than-days", type=click.FloatRange(min=0), default=0, show_default=True)
@with_appcontext
def purge_command(older_than_days: float) -> None:
    before = datetime.now(timezone.utc) - timedelta(days=older_than_days)
    count = _store(get_state()).purge(dead_before=before, delivered_before=before)
    click.echo(f"{count} row(s) deleted.")


def outbox_check(state: JournyState, errors: list[str], warnings: list[str]) -> None:
    """``flask journy check``'s outbox lines: the backlog, the oldest pending row's age, the dead count."""
    backend = _backend(state)
    if backend is None:
        return
    try:
        backlog = backend.backlog()
    except Exception as exc:  # a missing table, a database away: say so rather than fail the whole check
        errors.append(
            f"the outbox table cannot be read ({type(exc).__name__}: {exc}); create it: db.create_all(), or a "
            "migration (flask db migrate && flask db upgrade)"
        )
        return
    lines, found = backlog_report(backlog, RELAY_COMMAND, LIST_COMMAND)
    for line in lines:
        click.echo(line)
    warnings.extend(found)
