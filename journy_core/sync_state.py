"""The bulk sync's checkpoint file: where each stage of an interrupted run stopped, and what it had done.

``manage.py journy_sync`` and ``flask journy sync`` keep it (``.journy-sync.json`` by default) so that the same
command, run again, resumes where the interrupted run stopped instead of sending everything again. One file holds a
record per stage (``users``, ``accounts``, ``memberships``):

- ``after``: the last key whose calls are all done (a run resumes after it);
- ``scope``: the ``--since`` filter of the run that wrote it (:func:`journy_core.bulk.since_scope`): a run with
  another filter does not resume it, since the keys done under one filter say nothing of the rows of another;
- ``sent``, ``failed``, ``skipped``: the run's counts up to ``after``, so that calls that failed before an
  interruption still fail the resumed run (its summary and exit code include them);
- ``done`` and ``run``: a stage that finished while a later stage of its run did not; the same run (the same
  stages) resumed skips it instead of sending it all again. A run that finishes forgets its stages' records.

The file also names the app that wrote it (its models and database, see :func:`app_label`): keys of another
database mean nothing here, so such a file is refused rather than resumed. A file that is not a checkpoint file
(a path mistyped onto another JSON file) is refused too, and never overwritten. Files of the earlier, flat format
(``{"users": "20"}``, ``{"users": {"after": "20", "scope": ...}}``) are read, and rewritten in this one.

Every write replaces the file atomically (a temporary file renamed over it): a crash leaves the old records or
the new ones, never half of them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import JournyError

__all__ = [
    "DEFAULT_STATE_FILE",
    "EARLIER_STATE_FILES",
    "FORMAT",
    "RENAMED_STAGES",
    "STAGES",
    "Checkpoint",
    "CheckpointFile",
    "CheckpointFileError",
    "app_label",
    "check_key",
    "shown_key",
    "state_path",
]

#: The ``format`` of the files this version writes.
FORMAT = "journy-sync-checkpoints/2"

#: The stages, in the order they run: users first, so that an account's members exist when it names them.
STAGES = ("users", "accounts", "memberships")

#: Stage names an earlier version wrote in checkpoint files, and their name now (``flask journy sync`` called the
#: memberships stage ``members``): such a checkpoint is resumed, and rewritten under the current name.
RENAMED_STAGES = {"members": "memberships"}


#: The checkpoint file, relative to the current directory, when ``--state-file`` names none.
DEFAULT_STATE_FILE = ".journy-sync.json"

#: Default names of earlier versions (``manage.py journy_sync`` wrote ``.journy_sync_state.json``): when the
#: default file is absent and one of these exists, it is renamed to :data:`DEFAULT_STATE_FILE` and resumed.
EARLIER_STATE_FILES = (".journy_sync_state.json",)


class CheckpointFileError(JournyError):
    """The checkpoint file cannot be used: the message names it, says why and what to do (one line)."""


@dataclass(frozen=True)
class Checkpoint:
    """Where a run of one stage stopped (``after``, the last key done), the scope of its filter, and its counts.

    ``done`` marks a stage its run finished while a later stage did not; ``run`` is that run's stages."""

    after: str
    scope: str | None = None
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    done: bool = False
    run: tuple[str, ...] = ()


def shown_key(key: str, *, quoted: bool = False) -> str:
    """A key as the command prints it: as it is (``quoted``: in quotes), with escapes when it holds a line break or
    a control character (the output is one line per message), cut to 60 characters (an edited file may hold any)."""
    cut = key if len(key) <= 60 else key[:57] + "..."
    return repr(cut) if quoted or not (cut.isprintable() and cut.strip() == cut and cut) else cut


def check_key(check: Callable[[str], object], stage: str, after: str, path: object) -> None:
    """Refuse a checkpoint's key that ``check`` (the stage's model) says cannot be one of its keys, before the query
    that would fail on it. Raises :class:`CheckpointFileError`."""
    try:
        key = check(after)
        if isinstance(key, int) and not -(2**63) <= key < 2**63:  # no database column holds it
            raise ValueError("out of range for an integer column")
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointFileError(
            f"the checkpoint file {path}: the {stage} checkpoint {shown_key(after, quoted=True)} is not a key of "
            f"that model ({exc}); run with --restart to sync {stage} from the beginning."
        ) from None


def app_label(models: str, database: str) -> str:
    """The label a checkpoint file keeps of the app that wrote it: ``models`` as the user reads them
    (``"auth.User, shop.Account"``) and ``database`` (engine, name, host: never a password)."""
    return f"{models} in {database}"


class CheckpointFile:
    """The records of one checkpoint file. ``app`` (see :func:`app_label`) is checked against the file's own;
    ``None`` (no file) keeps the records in memory only."""

    def __init__(self, path: str | os.PathLike[str] | None, *, app: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.app = app

    def read(self) -> dict[str, Checkpoint]:
        """Every stage's record. Raises :class:`CheckpointFileError` for a file of another app or another kind."""
        data = self._load()
        if data is None:
            return {}
        if "format" not in data:
            return _flat_records(data, self._refuse)
        if data["format"] != FORMAT:  # before its app: --restart must not replace a file this version cannot read
            raise self._refuse(
                f"its format {str(data['format'])[:60]!r} is not {FORMAT!r}: run the version that wrote it, or "
                "name another --state-file"
            )
        other = data.get("app")
        if self.app is not None and other is not None and other != self.app:
            raise self._refuse(
                f"it holds the checkpoints of another app ({str(other)[:200]}; this one is {self.app}): name another "
                "--state-file, or run with --restart to replace them"
            )
        stages = data.get("stages")
        if not isinstance(stages, dict) or not set(stages) <= set(STAGES):
            raise self._refuse(
                "it is damaged ('stages' is not an object of users, accounts, memberships): name another "
                "--state-file, or run with --restart to replace it"
            )
        return {name: _record(name, value, self._refuse) for name, value in stages.items()}

    def replace_app(self) -> None:
        """Drop the records of another app (a ``--restart``): the next write names this app."""
        data = self._load()
        if data is not None and data.get("format") == FORMAT and data.get("app") not in (None, self.app):
            self._save({})

    def put(self, name: str, point: Checkpoint) -> None:
        """Write ``name``'s record, keeping the others."""
        records = self.read()
        records[name] = point
        self._save(records)

    def drop(self, *names: str) -> None:
        """Forget the records of ``names``; the file goes when none is left."""
        records = self.read()
        if not any(name in records for name in names):
            return
        for name in names:
            records.pop(name, None)
        self._save(records)

    def check_writable(self) -> None:
        """Raise :class:`CheckpointFileError` now, before anything is sent, when the file cannot be written."""
        if self.path is None:
            return
        if self._exists() and self.path.is_dir():
            raise self._refuse("it is a directory: name a file")
        self.read()  # refuses another app's file, or another kind of file, before it would be overwritten
        probe = self._temporary()
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise self._refuse(f"it cannot be written ({exc.strerror or exc}): name a writable --state-file") from None

    # -- the file --------------------------------------------------------------------------------------------

    def _refuse(self, why: str) -> CheckpointFileError:
        return CheckpointFileError(f"the checkpoint file {self.path}: {why}.")

    def _target(self) -> Path:
        """The file written: a symbolic link's target, so that the link goes on naming the checkpoints."""
        assert self.path is not None
        return self.path.resolve() if self.path.is_symlink() else self.path

    def _temporary(self) -> Path:
        target = self._target()
        return target.with_name(target.name + ".tmp")

    def _exists(self) -> bool:
        assert self.path is not None
        try:
            return self.path.exists()
        except OSError as exc:  # a name too long, a path through a file
            raise self._refuse(f"it cannot be used ({exc.strerror or exc}): name another --state-file") from None

    def _load(self) -> dict[str, Any] | None:
        if self.path is None or not self._exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (UnicodeError, ValueError, RecursionError) as exc:
            raise self._refuse(f"it is not a checkpoint file (not JSON: {exc}): name another --state-file") from None
        except OSError as exc:
            raise self._refuse(f"it cannot be read ({exc.strerror or exc})") from None
        if not isinstance(data, dict):
            raise self._refuse("it is not a checkpoint file (not a JSON object): name another --state-file")
        return data

    def _save(self, records: Mapping[str, Checkpoint]) -> None:
        if self.path is None:
            return
        if not records:  # nothing left to resume: no file (a link's target goes, the link stays for the next run)
            self._target().unlink(missing_ok=True)
            return
        data = {"format": FORMAT, "app": self.app, "stages": {name: _dump(point) for name, point in records.items()}}
        temporary = self._temporary()
        try:
            temporary.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
            temporary.replace(self._target())  # atomic: a crash leaves the old records or the new ones
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)  # a full disk leaves an empty one behind
            raise self._refuse(f"it cannot be written ({exc.strerror or exc})") from None


def state_path(state_file: str | os.PathLike[str] | None, *, dry_run: bool, tell: Callable[[str], None]) -> Path:
    """The checkpoint file: ``--state-file``, else :data:`DEFAULT_STATE_FILE`, adopting a file of an earlier name."""
    if state_file is not None:
        return Path(state_file)
    path = Path(DEFAULT_STATE_FILE)
    if path.exists():
        return path
    for name in EARLIER_STATE_FILES:
        earlier = Path(name)
        if earlier.exists():
            if dry_run:  # a dry run writes nothing: read it where it is
                tell(f"reading the checkpoint file {name} (now named {DEFAULT_STATE_FILE})")
                return earlier
            earlier.replace(path)
            tell(f"renamed the checkpoint file {name} to {DEFAULT_STATE_FILE}")
            return path
    return path


def _dump(point: Checkpoint) -> dict[str, Any]:
    data = asdict(point)
    data["run"] = list(point.run)
    return data


def _record(name: str, value: Any, refuse: Any) -> Checkpoint:
    if not isinstance(value, dict) or not isinstance(value.get("after"), str):  # "" for a done stage without rows
        raise refuse(f"the record of {name!r} has no 'after' key as a string: run with --restart to start it again")

    def count(field: str) -> int:
        number = value.get(field, 0)
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            # Taken as 0, a failure of the interrupted run would be dropped without a word.
            raise refuse(f"the record of {name!r} has a {field!r} that is not a count: run with --restart")
        return number

    scope, run = value.get("scope"), value.get("run")
    return Checkpoint(
        value["after"],
        scope if isinstance(scope, str) else None,
        sent=count("sent"),
        failed=count("failed"),
        skipped=count("skipped"),
        done=value.get("done") is True,
        run=tuple(str(stage) for stage in run) if isinstance(run, list) else (),
    )


def _flat_records(data: dict[str, Any], refuse: Any) -> dict[str, Checkpoint]:
    """The records of a file of the earlier format: ``{stage: key}`` or ``{stage: {"after": key, "scope": ...}}``."""
    records: dict[str, Checkpoint] = {}
    unknown = sorted(set(data) - set(STAGES) - set(RENAMED_STAGES))
    if unknown:  # another JSON object, {"name": "my-app"}: never taken for checkpoints, nor rewritten
        raise refuse(f"it is not a checkpoint file ({unknown[0][:60]!r} is not a stage): name another --state-file")
    for written, value in data.items():
        name = RENAMED_STAGES.get(written, written)
        if name != written and name in data:  # the current name, written since, wins
            continue
        if isinstance(value, dict) and "after" in value:
            if value["after"] is not None:
                scope = value.get("scope")
                records[name] = Checkpoint(str(value["after"]), None if scope is None else str(scope))
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            records[name] = Checkpoint(str(value))
        elif value is not None:
            raise refuse(f"it is not a checkpoint file ({written!r} holds {type(value).__name__})")
    return records
