"""The bulk sync's plan, written once for ``manage.py journy_sync`` and ``flask journy sync``.

Both commands run the same stages in the same order, take the same options, keep their checkpoints in the same
file and print the same lines; this module is all of that. An adapter only parses its command line in its
framework's idiom, builds one :class:`StageSource` per stage from its ORM (a count and a stream of
``(key, operation)`` in key order, both after a checkpoint's key) and prints through its framework's output::

    stages = select_stages(users=flag_users, accounts=flag_accounts, unavailable={"accounts": "... is not set"})
    check_options(since=since, since_field=since_field, batch_size=batch_size)
    with sync_client(api_key, base_url, enabled=enabled, dry_run=dry_run, setting=spell) as client:
        outcome = run_sync(client, [source(name) for name in stages], options, say=print)
    exit(outcome.exit_code)

The sending itself (pacing, retries, checkpoints, ``--since`` scopes) is :mod:`journy_core.bulk`.

Exit codes: 0 when every call arrived, 1 when some failed or the configuration cannot sync, 2 for a command line
the plan refuses (:class:`SyncUsageError`), 130 when interrupted (the checkpoint lets the same command resume).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from .bulk import SINCE_FIELDS, SINCE_FORMATS, BulkSync, Item, KeyRefused, ProgressReport, SyncSummary, since_scope
from .client import Client
from .errors import ConfigurationError, JournyError
from .sync_state import (
    DEFAULT_STATE_FILE,
    EARLIER_STATE_FILES,
    STAGES,
    CheckpointFileError,
    check_key,
    shown_key,
    state_path,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STATE_FILE",
    "EARLIER_STATE_FILES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_BATCH_SIZE",
    "OPTION_HELP",
    "PROGRESS_INTERVAL",
    "STAGES",
    "STAGE_FLAGS",
    "StageSource",
    "SyncInterrupted",
    "SyncOptions",
    "SyncOutcome",
    "SyncPlanError",
    "SyncUsageError",
    "check_options",
    "progress_line",
    "run_sync",
    "select_stages",
    "shown_key",
    "summary_line",
    "sync_client",
]


#: The stage-selection flags (``--users``, ``--accounts``) and the stages each selects; no flag selects all.
STAGE_FLAGS: Mapping[str, tuple[str, ...]] = {"users": ("users",), "accounts": ("accounts", "memberships")}

DEFAULT_BATCH_SIZE = 100
#: The largest ``--batch-size``: a batch is held in memory, and a checkpoint written only after it.
MAX_BATCH_SIZE = 10_000

#: Seconds between two progress lines of a stage (its first batch and its last are always printed).
PROGRESS_INTERVAL = 2.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

#: One help text per option, for both commands (each spells the option in its parser's idiom).
OPTION_HELP: Mapping[str, str] = {
    "--users": "sync users only (no --users nor --accounts: users, accounts and memberships)",
    "--accounts": "sync accounts and their memberships only",
    "--since": f"only the rows changed (or created) since DATE: {SINCE_FORMATS} (UTC without an offset)",
    "--since-field": f"the field --since filters on (default: the first of {', '.join(SINCE_FIELDS)} the model has)",
    "--batch-size": f"rows per batch and checkpoint, 1 to {MAX_BATCH_SIZE} (default {DEFAULT_BATCH_SIZE})",
    "--dry-run": "read and count everything, build every call, send nothing",
    "--state-file": f"the checkpoint file that lets an interrupted run resume (default {DEFAULT_STATE_FILE})",
    "--restart": "forget the checkpoints of the stages this run syncs and start them from the beginning",
}


class SyncPlanError(JournyError):
    """The sync cannot run as asked; the message says why (one line, for the command's error output)."""

    exit_code = EXIT_FAILED


class SyncUsageError(SyncPlanError):
    """The command line is wrong (an option without the one it needs, a value out of range)."""

    exit_code = EXIT_USAGE


class SyncInterrupted(SyncPlanError):
    """The run was interrupted (Ctrl-C, or SIGTERM); the checkpoint of the last batch done is in the state file.

    ``exit_code`` is what a shell reports for the signal: 130 for SIGINT, 143 for SIGTERM."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, *, signal_number: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signal_number)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a deployment stopping the job, ``kill``), handled as Ctrl-C is: the run stops at its checkpoint."""


@contextmanager
def _stopping_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the run lasts (only the main thread can set a handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def select_stages(users: bool, accounts: bool, *, unavailable: Mapping[str, str]) -> tuple[str, ...]:
    """The stages a run syncs, in order, from the ``--users`` / ``--accounts`` flags.

    ``unavailable`` maps a stage the configuration cannot sync to the reason, naming the setting in the
    adapter's spelling (``{"accounts": "JOURNY_ACCOUNT_MODEL is not set"}``). Such a stage is left out; a flag whose
    stage is unavailable, or nothing left to sync, is a :class:`SyncPlanError` (memberships alone are optional: an
    app without a members relation syncs its accounts without them)."""
    flags = {"users": users, "accounts": accounts}
    chosen = [flag for flag, given in flags.items() if given] or list(STAGE_FLAGS)
    for flag in chosen:
        main = STAGE_FLAGS[flag][0]
        if flags[flag] and main in unavailable:
            raise SyncPlanError(f"--{flag}: {unavailable[main]}.")
    # A flag's later stages need its first one's model (no memberships without accounts).
    stages = tuple(
        stage
        for flag in chosen
        if STAGE_FLAGS[flag][0] not in unavailable
        for stage in STAGE_FLAGS[flag]
        if stage not in unavailable
    )
    if not stages:
        reasons = [unavailable[STAGE_FLAGS[flag][0]] for flag in chosen]
        raise SyncPlanError(f"nothing to sync: {'; '.join(reasons)}.")
    return stages


def check_options(*, since: datetime | None, since_field: str | None, batch_size: int) -> None:
    """Refuse option combinations the plan cannot honour, before anything is read or sent."""
    if since_field is not None and since is None:
        raise SyncUsageError("--since-field needs --since.")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise SyncUsageError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}.")


def sync_client(
    api_key: str | None, base_url: str | None, *, enabled: bool, dry_run: bool, setting: Callable[[str], str]
) -> Client:
    """The client a run sends with. ``setting`` spells an option's name in the adapter's configuration
    (``lambda name: f"JOURNY_{name}"``) for the error messages.

    A dry run needs no key (it sends nothing) and runs while the integration is disabled; a real run refuses both."""
    if not enabled and not dry_run:
        raise SyncPlanError(f"{setting('ENABLED')} is False: nothing is sent (use --dry-run to try the sync).")
    if not api_key:
        if not dry_run:
            raise SyncPlanError(f"{setting('API_KEY')} is not set: the sync has nothing to send with.")
        api_key = "dry-run"
    try:
        return Client(api_key, base_url=base_url)
    except (ConfigurationError, ValueError) as exc:  # a malformed key or URL: the message names it
        raise SyncPlanError(str(exc)) from None


@dataclass(frozen=True)
class StageSource:
    """What an adapter supplies for one stage, from its ORM.

    ``count(after)`` and ``items(after)`` see the same rows: those after the key ``after`` (None: all), filtered on
    ``since_field`` when the run has ``--since``; ``items`` yields ``(key, operation)`` in ascending key order
    (``None`` for a row left out), every call of one key together. ``check_key(key)`` raises ValueError when a
    checkpoint's key cannot be a key of the model (the file was edited, or written for another model)."""

    name: str
    count: Callable[[str | None], int]
    items: Callable[[str | None], Iterable[Item]]
    since_field: str | None = None
    check_key: Callable[[str], object] | None = None


@dataclass(frozen=True)
class SyncOptions:
    """The options of a run that the plan reads (the stage flags are :func:`select_stages`)."""

    since: datetime | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    state_file: str | os.PathLike[str] | None = None  # None: DEFAULT_STATE_FILE, adopting an earlier name
    restart: bool = False


@dataclass(frozen=True)
class SyncOutcome:
    """What a run did, stage by stage."""

    summaries: tuple[SyncSummary, ...]

    @property
    def failed(self) -> int:
        """Calls that did not arrive (journy.io refused them, or retries ran out)."""
        return sum(summary.failed for summary in self.summaries)

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK`, or :data:`EXIT_FAILED` when a call failed."""
        return EXIT_FAILED if self.failed else EXIT_OK

    @property
    def failure_message(self) -> str | None:
        """The one-line error a command ends with when calls failed; None when all arrived."""
        if not self.failed:
            return None
        return (
            f"{self.failed} call(s) failed: the log has journy.io's answers, and the rows whose data could not be "
            "read; a run after the fix sends them again."
        )


def summary_line(summary: SyncSummary) -> str:
    """``users: sent 40, failed 0, skipped 1 in 2.5 s``; a resumed stage says after which key, and counts the calls
    of the run it resumes too."""
    verb = "would send" if summary.dry_run else "sent"
    counts = f"{summary.name}: {verb} {summary.sent}, failed {summary.failed}, skipped {summary.skipped}"
    if summary.finished_earlier:
        return f"{counts} by the interrupted run, which finished this stage"
    timed = f"{counts} in {summary.seconds:.1f} s"
    if summary.resumed_from is None:
        return timed
    return f"{timed}, resumed after {shown_key(summary.resumed_from)} (with the interrupted run's counts)"


def progress_line(report: ProgressReport) -> str:
    """``  users: 20/40 done, 0 failed, about 12 s left`` (no estimate once the stage is done)."""
    total = f"/{report.total}" if report.total is not None else ""
    finished = report.total is not None and report.done >= report.total
    eta = f", about {report.eta_seconds:.0f} s left" if report.eta_seconds and not finished else ""
    return f"  {report.name}: {report.done}{total} done, {report.failed} failed{eta}"


class _Progress:
    """Prints a stage's first batch, its last, and one line every ``interval`` seconds in between."""

    def __init__(self, tell: Callable[[str], None], interval: float) -> None:
        self.tell = tell
        self.interval = interval
        self.printed: dict[str, float] = {}

    def __call__(self, report: ProgressReport) -> None:
        now = time.monotonic()
        finished = report.total is not None and report.done >= report.total
        last = self.printed.get(report.name)
        if last is not None and now - last < self.interval and not finished:
            return
        self.printed[report.name] = now
        self.tell(progress_line(report))


def _run_stage(
    bulk: BulkSync, source: StageSource, stages: tuple[str, ...], options: SyncOptions, tell: Callable[[str], None]
) -> SyncSummary:
    # A checkpoint is resumed only by a run with the same --since and field (see journy_core.bulk).
    scope = since_scope(options.since, source.since_field)
    point = bulk.checkpoint(source.name)
    if point is not None and point.done and point.scope == scope and point.run == stages:
        tell(f"{source.name}: finished by the interrupted run; not sent again")
        counts = (point.sent, point.failed, point.skipped)
        return SyncSummary(source.name, *counts, 0.0, None, options.dry_run, finished_earlier=True)
    notice = bulk.resume_notice(source.name, scope)
    if notice is not None:
        tell(notice)
    after = bulk.resume_after(source.name, scope)
    if after is not None and source.check_key is not None:
        check_key(source.check_key, source.name, after, bulk.state_file)
    total = source.count(after)
    tell(f"{source.name}: {total} to go" + (f", resuming after key {shown_key(after)}" if after is not None else ""))
    return bulk.run(source.name, source.items(after), total, scope=scope, run=stages)


def run_sync(
    client: Client,
    sources: Sequence[StageSource],
    options: SyncOptions,
    *,
    say: Callable[[str], None],
    tell: Callable[[str], None] | None = None,
    progress_interval: float = PROGRESS_INTERVAL,
    app: str | None = None,
) -> SyncOutcome:
    """Run the stages of ``sources`` in order and print the summary.

    ``say`` prints the summary lines (the command's standard output); ``tell`` the progress and notices (default:
    ``say``). ``app`` names the app (:func:`journy_core.sync_state.app_label`): a checkpoint file of another app
    is refused. Raises :class:`SyncInterrupted` on Ctrl-C or SIGTERM, the checkpoint of the last batch done kept,
    and :class:`SyncPlanError` when the checkpoint file cannot be used (before anything is sent)."""
    if options.since is not None and any(source.since_field is None for source in sources):
        raise ValueError("with --since, every StageSource needs its since_field")
    tell = say if tell is None else tell
    try:
        with _stopping_on_sigterm():
            return _run(client, sources, options, say, tell, progress_interval, app)
    except (CheckpointFileError, KeyRefused) as exc:
        raise SyncPlanError(str(exc)) from None


def _run(
    client: Client,
    sources: Sequence[StageSource],
    options: SyncOptions,
    say: Callable[[str], None],
    tell: Callable[[str], None],
    progress_interval: float,
    app: str | None,
) -> SyncOutcome:
    path = state_path(options.state_file, dry_run=options.dry_run, tell=tell)
    bulk = BulkSync(
        client,
        batch_size=options.batch_size,
        dry_run=options.dry_run,
        # A dry run never writes the file; with --restart it does not read it either.
        state_file=None if options.dry_run and options.restart else path,
        progress=_Progress(tell, progress_interval),
        app=app,
    )
    stages = tuple(source.name for source in sources)
    if not options.dry_run:
        if options.restart:
            bulk.checkpoints.replace_app()
            bulk.forget(*stages)
        bulk.checkpoints.check_writable()  # before anything is sent
    else:
        bulk.checkpoints.read()  # refuses another app's file, as a real run would
    summaries: list[SyncSummary] = []
    stopped_by: int | None = None
    try:
        for source in sources:
            summaries.append(_run_stage(bulk, source, stages, options, tell))
    except KeyboardInterrupt as stop:
        stopped_by = signal.SIGTERM if isinstance(stop, _Terminated) else signal.SIGINT
    if stopped_by is not None:
        # Raised here, not in the except block, so that no exception chains the interruption's traceback: its
        # frames hold the stage's query, whose database cursor is then closed now, while the connection is open,
        # not when the process exits ("Exception ignored ... Cannot operate on a closed database").
        _interrupted(summaries, say, path, options.dry_run, stopped_by)
    if not options.dry_run:
        bulk.forget(*stages)  # the run is done: nothing of it is left to resume
    for summary in summaries:
        say(summary_line(summary))
    return SyncOutcome(tuple(summaries))


def _interrupted(
    summaries: list[SyncSummary], say: Callable[[str], None], path: Path, dry_run: bool, signal_number: int
) -> NoReturn:
    for summary in summaries:
        say(summary_line(summary))
    if dry_run:
        message = "interrupted (a dry run: nothing was sent)."
    elif not path.exists():  # stopped before its first batch was recorded
        message = "interrupted before a batch was done: run the same command again to start over."
    else:
        message = f"interrupted: run the same command again to resume after {path}'s checkpoint."
    raise SyncInterrupted(message, signal_number=signal_number)
