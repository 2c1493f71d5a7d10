"""The hub database as a file: a consistent snapshot of a running hub, and its restore.

- SQLite: the online backup API of :mod:`sqlite3` copies the database in one step inside one
  read transaction (WAL mode: writers carry on meanwhile), into a single self-contained file
  (journal mode DELETE); restoring runs the same API the other way, through SQLite's own locks.
- PostgreSQL: ``pg_dump --format=custom`` of the binaries matching the server's major version
  (``/usr/lib/postgresql/<major>/bin``, or a directory the operator names), reading an exported
  snapshot (:func:`snapshot`) so that what the caller reads in the same transaction is exactly
  what the dump holds; restoring runs ``pg_restore --single-transaction`` into an empty database.

Connection secrets go to the client programs in their environment (``PGPASSWORD``), never on
their command line. Used by :mod:`imaging_hub.worklist.admin.backup`.
"""

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, make_url, text
from sqlalchemy.engine import URL

from imaging_hub.errors import ImagingHubError

#: The Debian layout of PostgreSQL's client programs, one directory per major version.
DEBIAN_PG_BIN = "/usr/lib/postgresql/{major}/bin"
PG_TIMEOUT_SECONDS = 6 * 3600


class DatabaseDumpError(ImagingHubError):
    """The database could not be snapshotted or restored."""

    code = "backup_failed"


def kind_of(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"`` (anything else is refused)."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseDumpError(f"Backups support SQLite and PostgreSQL, not {backend}.")
    return backend


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise DatabaseDumpError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(database)


def read_only_sqlite(path: Path) -> Engine:
    """An engine reading the SQLite file *path* without ever writing to it."""
    uri = f"file:{path.resolve()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))


# --- SQLite ------------------------------------------------------------------------------------


def sqlite_snapshot(url: str, target: Path) -> None:
    """Copy the live SQLite database of *url* to *target* (a new file) in one consistent step."""
    source_path = sqlite_path(url)
    if not source_path.is_file():
        raise DatabaseDumpError("The hub's SQLite database file does not exist.")
    source = sqlite3.connect(f"file:{source_path.resolve()}?mode=ro", uri=True, timeout=60)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)  # pages=-1: all pages in one step, one read transaction
            dest.execute("PRAGMA journal_mode=DELETE")
            verdict = dest.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise DatabaseDumpError("The SQLite snapshot does not pass SQLite's quick_check.")
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise DatabaseDumpError(f"SQLite could not copy the database: {exc}.") from exc
    finally:
        source.close()
    _fsync(target)


def sqlite_restore(snapshot: Path, url: str) -> None:
    """Write the SQLite *snapshot* over the (empty) database of *url*, through SQLite's locks."""
    target = sqlite_path(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = sqlite3.connect(f"file:{snapshot.resolve()}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(target, timeout=60)
            try:
                source.backup(dest)
            finally:
                dest.close()
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise DatabaseDumpError(f"SQLite could not restore the database: {exc}.") from exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- PostgreSQL --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgTools:
    """The client programs for one server: where they are and the server's major version."""

    bin_dir: Path
    server_major: int

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)


def pg_server_major(conn: Connection) -> int:
    return int(conn.execute(text("SHOW server_version_num")).scalar_one()) // 10000


def pg_tools(conn: Connection, bin_dir: Path | None = None) -> PgTools:
    """pg_dump/pg_restore of the server's major version (or newer: they read older servers).

    *bin_dir* (the operator's choice) alone when given; else Debian's directory for the
    server's major version, then the ones on PATH. Each is asked for its version.
    """
    major = pg_server_major(conn)
    if bin_dir is not None:
        candidates = [bin_dir]  # the operator's choice, and only it
    else:
        candidates = [Path(DEBIAN_PG_BIN.format(major=major))]
        on_path = shutil.which("pg_dump")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    found: list[str] = []
    for candidate in candidates:
        dump = candidate / "pg_dump"
        if not (dump.is_file() and (candidate / "pg_restore").is_file()):
            found.append(f"{candidate} (no pg_dump and pg_restore there)")
            continue
        version = _client_major(dump)
        found.append(f"{dump} (version {version})")
        if version is not None and version >= major:
            return PgTools(bin_dir=candidate, server_major=major)
    raise DatabaseDumpError(
        f"No pg_dump/pg_restore for PostgreSQL {major} or newer was found "
        f"(looked at: {'; '.join(found)}); install the postgresql-client package of version "
        f"{major} or name its bin directory with --pg-bin."
    )


def _client_major(program: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(program), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    # "pg_dump (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"
    for word in out.split():
        head = word.split(".")[0]
        if head.isdigit():
            return int(head)
    return None


def _pg_environment(url: URL) -> dict[str, str]:
    """libpq's environment for *url*: where, who, which database, and the password (over the
    process's own PG* variables, which the hub's driver, libpq too, honours as well)."""
    env = dict(os.environ)
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None,
        "PGDATABASE": url.database,
    }
    env.update({k: v for k, v in values.items() if v})
    for name, value in url.query.items():
        # sslmode=require, sslrootcert=... and the like: libpq's PG<NAME> variables.
        if isinstance(value, str) and name.replace("_", "").isalnum():
            env[f"PG{name.upper()}"] = value
    env["PGCONNECT_TIMEOUT"] = env.get("PGCONNECT_TIMEOUT", "30")
    return env


def _run_pg(tools: PgTools, argv: list[str], url: str, what: str) -> None:
    try:
        result = subprocess.run(
            [tools.program(argv[0]), *argv[1:]],
            env=_pg_environment(make_url(url)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatabaseDumpError(f"{what} could not run: {exc}.") from exc
    if result.returncode != 0:
        # pg_dump's own messages name tables and settings, never row contents.
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise DatabaseDumpError(f"{what} failed (exit status {result.returncode}): {detail}")


@contextmanager
def pg_snapshot(engine: Engine) -> Iterator[tuple[Connection, str]]:
    """A REPEATABLE READ transaction and the id of its exported snapshot, open while in use."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot_id = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            yield conn, snapshot_id


def pg_dump(tools: PgTools, url: str, snapshot_id: str, target: Path) -> None:
    """``pg_dump`` of *url* as of the exported snapshot, custom format, to *target*."""
    _run_pg(
        tools,
        [
            "pg_dump",
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            f"--snapshot={snapshot_id}",
            f"--file={target}",
        ],
        url,
        "pg_dump",
    )
    _fsync(target)


def pg_restore(tools: PgTools, dump: Path, url: str) -> None:
    """``pg_restore`` of *dump* into the (emptied) database of *url*, all or nothing."""
    _run_pg(
        tools,
        [
            "pg_restore",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            f"--dbname={make_url(url).database}",
            str(dump),
        ],
        url,
        "pg_restore",
    )


# --- The target database -----------------------------------------------------------------------


def used_tables(conn: Connection) -> list[str]:
    """The tables of the database holding rows that make a hub "used" (empty list: unused).

    Not counted: Alembic's ``alembic_version`` and the audit chain's head while it is at event 0
    (a migration creates it so).
    """
    names = inspect(conn).get_table_names()
    used = []
    for name in sorted(names):
        if name == "alembic_version":
            continue
        quoted = conn.dialect.identifier_preparer.quote(name)
        if name == "audit_head":
            last = conn.execute(text(f"SELECT max(last_id) FROM {quoted}")).scalar()
            if last:
                used.append(name)
            continue
        if conn.execute(text(f"SELECT 1 FROM {quoted} LIMIT 1")).first() is not None:
            used.append(name)
    return used


def drop_all_tables(conn: Connection) -> None:
    """Drop every table of an unused database (a schema `db upgrade` made), before a restore."""
    metadata = MetaData()
    metadata.reflect(conn)
    metadata.drop_all(conn)
