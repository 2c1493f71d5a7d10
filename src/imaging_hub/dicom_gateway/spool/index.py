"""The spool's index: one SQLite database (WAL mode) shared by every process on the spool.

The index runs with ``synchronous=NORMAL`` (one fsync less per instance): a commit survives a
process crash; after a power cut, opening the spool re-indexes the fsync'd files whose rows were
lost (see :class:`imaging_hub.dicom_gateway.spool.Spool`).

States of an instance: ``pending`` (waiting or leased for upload), ``sent`` (the hub holds it),
``parked`` (the hub refused it for good; kept with the hub's code and detail, retried on the
parking schedule or by the operator). A study is ``open`` while instances may still come or its
completion is due, ``done`` once the hub confirmed it, ``parked`` when the hub refused it for
good.
"""

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 2,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    sent_at REAL,
    sent_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS ix_instances_queue ON instances (state, priority, not_before);
CREATE INDEX IF NOT EXISTS ix_instances_study ON instances (study_instance_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_instance_uid TEXT PRIMARY KEY,
    calling_ae TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 2,
    state TEXT NOT NULL DEFAULT 'open',
    open_associations INTEGER NOT NULL DEFAULT 0,
    last_received_at REAL NOT NULL,
    completed_at REAL,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The studies an association still open is carrying (one row per association and study; the
-- association is "<pid>:<id>" of the SCP process holding it). A study with a row here is never
-- complete; rows of a crashed process are removed (see spool.studies.OpenAssociations).
CREATE TABLE IF NOT EXISTS open_associations (
    association TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    pid INTEGER NOT NULL,
    calling_ae TEXT NOT NULL DEFAULT '',
    opened_at REAL NOT NULL,
    PRIMARY KEY (association, study_instance_uid)
);
CREATE INDEX IF NOT EXISTS ix_open_associations_study
    ON open_associations (study_instance_uid);
-- MPPS steps (PS3.4 F.7) the modalities created, their state and what they referenced.
CREATE TABLE IF NOT EXISTS mpps_steps (
    mpps_uid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL DEFAULT '',
    accession_number TEXT NOT NULL DEFAULT '',
    calling_ae TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '',
    step_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    performed_at TEXT NOT NULL DEFAULT '',
    ended_at TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    series INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_mpps_steps_study ON mpps_steps (study_instance_uid);
CREATE TABLE IF NOT EXISTS mpps_instances (
    mpps_uid TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    PRIMARY KEY (mpps_uid, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS ix_mpps_instances_sop ON mpps_instances (sop_instance_uid);
-- The state of each step the hub has not yet confirmed: one row per step, replaced by each
-- change (only the last state matters), removed once the hub took that version.
CREATE TABLE IF NOT EXISTS mpps_outbox (
    mpps_uid TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    queued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    error_code TEXT NOT NULL DEFAULT ''
);
"""

#: Columns added after the first release: (table, column, declaration). Added on open.
ADDED_COLUMNS = (
    # The hub's machine-readable code of the last refusal (problem+json ``code``).
    ("instances", "error_code", "TEXT NOT NULL DEFAULT ''"),
    # How often the instance was parked (the parking schedule doubles with each).
    ("instances", "parks", "INTEGER NOT NULL DEFAULT 0"),
    ("instances", "parked_at", "REAL"),
    ("studies", "error_code", "TEXT NOT NULL DEFAULT ''"),
    # Completion attempts that failed in a retryable way, and when the next one is due.
    ("studies", "attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("studies", "not_before", "REAL NOT NULL DEFAULT 0"),
    ("studies", "parks", "INTEGER NOT NULL DEFAULT 0"),
    ("studies", "parked_at", "REAL"),
    # The accession number of the study's instances (matches it to an order of the cache).
    ("studies", "accession_number", "TEXT NOT NULL DEFAULT ''"),
)


class Index:
    """The connection (one per process and spool), its lock and transactions."""

    def __init__(self, root: Path) -> None:
        self.path = root / "index.sqlite3"
        self.lock = threading.RLock()
        self.db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a crash of the process, but not a power cut until the
            # next WAL sync. What is promised survives anyway: the instance file and its
            # directory entry are fsync'd before Success, and opening the spool re-indexes files
            # the index lacks.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self._migrate()
        except BaseException:
            self.db.close()  # e.g. a locked or corrupt index: no connection left open
            raise

    def _migrate(self) -> None:
        with self.tx() as db:
            for table, column, declaration in ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            # Before parking had a schedule, a refused instance was 'failed' for ever.
            db.execute("UPDATE instances SET state = 'parked' WHERE state = 'failed'")

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error:
                # A COMMIT that failed (SQLITE_FULL: the disk is full) may leave the transaction
                # open; rolled back, the connection takes the next one.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def sync(self) -> None:
        """Make the last commit survive a power cut (fsync of the write-ahead log)."""
        fd = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def add_to_counters(db: sqlite3.Connection, increments: dict[str, int]) -> None:
    """Add to named counters kept in ``meta`` (inside the caller's transaction)."""
    for name, increment in increments.items():
        if not increment:
            continue
        db.execute(
            """INSERT INTO meta (key, value) VALUES (?, ?)
               ON CONFLICT (key) DO UPDATE SET
                   value = CAST(CAST(meta.value AS INTEGER) + ? AS TEXT)""",
            (f"counter:{name}", str(increment), increment),
        )


def read_counters(db: sqlite3.Connection) -> dict[str, int]:
    """Every named counter (see :func:`add_to_counters`)."""
    rows = db.execute("SELECT key, value FROM meta WHERE key LIKE 'counter:%'").fetchall()
    return {key.removeprefix("counter:"): int(value) for key, value in rows}
