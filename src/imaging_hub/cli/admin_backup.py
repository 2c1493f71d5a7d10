"""``imaging-hub admin backup DIR`` / ``restore DIR`` / ``verify-backup DIR`` (over
:mod:`imaging_hub.worklist.admin.backup`, which decides and audits everything).

Exit codes: 0 done; 1 failed (the message says why); 3 refused, the target hub is not empty;
4 refused, the backup is incomplete, damaged or cannot be restored by this version.
"""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from imaging_hub.cli.common import ConfigOpt, console, fail, setup
from imaging_hub.config import HubSettings

EXIT_NOT_EMPTY = 3
EXIT_BAD_BACKUP = 4

DirArg = Annotated[Path, typer.Argument(help="The backup directory.")]
PgBinOpt = Annotated[
    Path | None,
    typer.Option(
        "--pg-bin",
        envvar="IMAGING_HUB_PG_BIN",
        help="Directory of pg_dump/pg_restore (default: the server's version under "
        "/usr/lib/postgresql, then PATH).",
    ),
]
STAGES = {
    "database": "database",
    "verify": "checking the backup",
    "objects": "objects",
}


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback: bars on a terminal, a counted log line every few seconds otherwise."""
    if console.is_terminal:
        bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        tasks: dict[str, TaskID] = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(STAGES.get(stage, stage), total=total or None)
            bars.update(tasks[stage], completed=done, total=total or None)

        with bars:
            yield show
        return
    last = {"at": 0.0}

    def log(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last["at"] >= 5:
            last["at"] = now
            console.print(f"{STAGES.get(stage, stage)}: {done}/{total}")

    yield log


def _run_refusing(action: Callable[[], None]) -> None:
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.admin.backup import (
        BackupCorrupt,
        BackupIncompatible,
        BackupIncomplete,
        RestoreTargetNotEmpty,
    )

    try:
        action()
    except RestoreTargetNotEmpty as exc:
        fail(f"restore refused: {exc}", EXIT_NOT_EMPTY)
    except (BackupIncomplete, BackupCorrupt, BackupIncompatible) as exc:
        fail(f"not a usable backup: {exc}", EXIT_BAD_BACKUP)
    except ImagingHubError as exc:
        fail(f"failed ({exc.code}): {exc}")
    except KeyboardInterrupt:
        fail("interrupted", 130)


LinkDestOpt = Annotated[
    Path | None,
    typer.Option(
        "--link-dest",
        help="An earlier complete backup on the same file system: objects unchanged since are "
        "hard-linked from it (after checking their SHA-256) instead of copied.",
    ),
]


def backup(
    directory: DirArg,
    config: ConfigOpt = None,
    pg_bin: PgBinOpt = None,
    link_dest: LinkDestOpt = None,
) -> None:
    """Back up the running hub (database snapshot, then the objects it references, CA) to DIR."""
    setup(config)
    os.umask(0o077)  # a backup holds every patient's data and the CA key: the owner's only
    from imaging_hub.worklist.access.caller import Caller
    from imaging_hub.worklist.admin import backup as domain

    def run() -> None:
        with _progress() as progress:
            result = domain.backup(
                HubSettings(),
                directory,
                Caller.console(),
                progress=progress,
                pg_bin=pg_bin,
                link_dest=link_dest,
            )
        manifest = result.manifest
        console.print(
            f"backup complete in {result.directory}: {manifest['database']['kind']} database at "
            f"revision {manifest['alembic_revision']}, {result.objects} objects "
            f"({result.bytes} bytes, {manifest['objects']['linked']} hard-linked from "
            f"--link-dest), audit trail up to event {manifest['audit']['last_id']}"
        )
        if result.changed_objects:
            console.print(
                f"[yellow]warning: {len(result.changed_objects)} object(s) differ from the "
                f"SHA-256 the database records (re-sent after the snapshot, or damaged), e.g. "
                f"{result.changed_objects[0]}[/yellow]"
            )

    _run_refusing(run)


def restore(directory: DirArg, config: ConfigOpt = None, pg_bin: PgBinOpt = None) -> None:
    """Restore the backup in DIR into this EMPTY hub (stop the hub first); verifies everything."""
    setup(config)
    from imaging_hub.worklist.access.caller import Caller
    from imaging_hub.worklist.admin import backup as domain

    def run() -> None:
        with _progress() as progress:
            result = domain.restore(
                HubSettings(), directory, Caller.console(), progress=progress, pg_bin=pg_bin
            )
        console.print(
            f"restore complete: {result.objects} objects ({result.bytes} bytes), database "
            f"revision {result.from_revision} -> {result.to_revision}, audit trail OK "
            f"({result.audit_events} events)"
        )

    _run_refusing(run)


def verify_backup(directory: DirArg) -> None:
    """Check a backup without restoring it: manifest, SHA256SUMS and every file's SHA-256."""
    setup(None)
    from imaging_hub.worklist.admin import backup as domain

    def run() -> None:
        with _progress() as progress:
            manifest = domain.verify_backup(directory, progress=progress)
        console.print(
            f"backup OK: {manifest['files']} files intact, made {manifest['created_at']} by hub "
            f"{manifest['hub_version']} ({manifest['database']['kind']}, revision "
            f"{manifest['alembic_revision']}), {manifest['objects']['count']} objects, audit "
            f"trail up to event {manifest['audit']['last_id']}"
        )

    _run_refusing(run)
