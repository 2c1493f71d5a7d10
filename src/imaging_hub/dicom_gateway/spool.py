"""The gateway's durable spool: instance files on disk plus an index in SQLite (WAL mode).

``put`` (or ``stage`` and then ``commit``) returns only once the instance file and its directory
entry are fsync'd and the index row is committed, so C-STORE Success is answered only for
instances that survive a crash or a power cut. The index runs with ``synchronous=NORMAL`` (one
fsync less per instance): a commit survives a process crash, and after a power cut, opening the
spool re-indexes the fsync'd files whose rows were lost. Forwarding leases instances
(``lease``), then acknowledges (``ack``) or backs off (``nack``); a lease not acknowledged in
time (crash) becomes available again.

States of an instance: ``pending`` (waiting or leased for upload), ``sent`` (hub holds it),
``failed`` (parked with a reason after a permanent error). A study is ``open`` while instances
may still come, ``stable`` once its quiet period passed, ``done`` when the hub confirmed it.
"""

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imaging_hub.dicom.attributes import parse_instance
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import InvalidDicomError, SpoolError

log = logging.getLogger(__name__)

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
"""


@dataclass(frozen=True)
class SpooledInstance:
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int
    sha256: str
    attempts: int


@dataclass(frozen=True)
class SpoolStats:
    pending: int
    pending_bytes: int
    sent: int
    failed: int
    open_studies: int
    last_sent_at: float | None
    last_error: str


@dataclass(frozen=True)
class StagedFile:
    """An instance being written to ``tmp/`` (see :meth:`Spool.stage`), and its SHA-256."""

    path: Path
    done: "Future[None]"
    size: int
    sha256: str


def _write_synced(path: Path, parts: tuple[bytes, ...]) -> None:
    """Write *parts* one after the other to a new file, durably (a failure removes the
    partial file).

    The file is opened with O_DSYNC and written with one writev: the write returns once the
    data (and what is needed to read it back) is on stable storage, as a write followed by
    fdatasync would, but without this thread needing the GIL between the two while the
    C-STORE handler holds it checking the data set.
    """
    with _new_file(path, os.O_DSYNC) as fd:
        _write_all(fd, [memoryview(part) for part in parts if len(part)])


@contextmanager
def _new_file(path: Path, flags: int) -> Iterator[int]:
    """A descriptor of the new file *path*, opened for writing with *flags*; if anything in
    the block fails with OSError, the partial file is removed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)
    except OSError:
        path.unlink(missing_ok=True)
        raise


def _write_all(fd: int, views: list[memoryview]) -> None:
    """writev until every byte of *views* is written (a short write continues)."""
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


#: Direct I/O needs the buffer's address, the file offset and the length aligned to the
#: device's logical block size; a page (4 KiB) suits every common device.
DIRECT_ALIGNMENT = 4096


#: Each writing thread keeps an aligned buffer this large at most for the next file; a larger
#: instance (a long multi-frame, say) gets a buffer of its own, released after its write.
KEPT_DIRECT_BUFFER_BYTES = 64 * 1024 * 1024


class _DirectBuffer(threading.local):
    """One page-aligned buffer per writing thread, reused for every file it writes."""

    memory: mmap.mmap | None = None

    @contextmanager
    def at_least(self, size: int) -> Iterator[mmap.mmap]:
        rounded = max(1, -(-size // (1024 * 1024))) * 1024 * 1024
        if rounded > KEPT_DIRECT_BUFFER_BYTES:
            with mmap.mmap(-1, rounded) as own:
                yield own
            return
        if self.memory is None or len(self.memory) < rounded:
            if self.memory is not None:
                self.memory.close()
            self.memory = mmap.mmap(-1, rounded)
        yield self.memory


_direct_buffers = _DirectBuffer()


def _write_direct(path: Path, parts: tuple[bytes, ...]) -> None:
    """Like `_write_synced`, with the file's whole blocks written by direct I/O (O_DIRECT).

    A buffered write copies the data into the page cache first, which costs memory pages the
    spool never reads back soon (the forwarder reads each file once, later) and, on virtual
    machines, fresh pages the host must supply: on this project's benchmark machine the copy
    took about a third of the gateway's CPU for a CT slice once the page cache had grown
    (docs/gateway.md). Here
    the data is copied once into a reused aligned buffer, its whole blocks go to the device
    from there, the last partial block is written through the page cache, and fdatasync makes
    both and the file's size durable. Raises OSError (EINVAL) where the file system has no
    direct I/O; the caller then writes buffered.
    """
    size = sum(len(part) for part in parts)
    whole = size - size % DIRECT_ALIGNMENT
    with _direct_buffers.at_least(size) as memory:
        offset = 0
        for part in parts:
            memory[offset : offset + len(part)] = part
            offset += len(part)
        with _new_file(path, os.O_DIRECT) as fd, memoryview(memory) as view:
            if whole:
                _write_all(fd, [view[:whole]])
            if whole < size:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
                _write_all(fd, [view[whole:size]])
            os.fdatasync(fd)


def _sha256(parts: tuple[bytes, ...]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One spool directory: ``objects/`` for files, ``index.sqlite3`` for the queue."""

    def __init__(self, root: Path, *, clean_tmp: bool = True, direct_io: bool = True) -> None:
        """Open (or create) the spool. Several processes may open one spool; only the first
        (the gateway's main process, before its SCP workers start) cleans ``tmp/``. With
        *direct_io*, instance files are written by direct I/O where the file system has it
        (`_write_direct`)."""
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            root / "index.sqlite3", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of the process, but not a power cut until the next
        # WAL sync. What is promised survives anyway: the instance file and its directory entry
        # are fsync'd before Success, and opening the spool re-indexes files the index lacks.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._durable_dirs: set[str] = set()
        self.direct_io = direct_io
        # Staged writes (see stage()): one thread per association at most needs one.
        self._writer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-write")
        self.reindexed = 0
        if clean_tmp:
            self._clean_tmp()
            self.reindexed = self._reindex_orphans()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        with self._lock:
            self._db.close()

    def _clean_tmp(self) -> None:
        """Partial files of a crash before acknowledgement are garbage: nothing was promised."""
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def _reindex_orphans(self) -> int:
        """Queue instance files the index does not know (its last commits lost in a power cut).

        Files reach ``objects/`` only after every check passed, so an orphan is a complete,
        checked instance; forwarding one that was never acknowledged is harmless (idempotent).
        """
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT sop_instance_uid FROM instances")}
        added = 0
        for study_dir in sorted(self.objects.iterdir()):
            for path in sorted(study_dir.glob("*.dcm")):
                if path.stem in known:
                    continue
                try:
                    data = path.read_bytes()
                    info = parse_instance(data)
                except (OSError, InvalidDicomError) as exc:
                    log.error("spool file %s is unreadable and stays unqueued: %s", path, exc)
                    continue
                if info.sop_instance_uid != path.stem or info.study_instance_uid != study_dir.name:
                    log.error("spool file %s does not hold the instance its name says", path)
                    continue
                self._index(
                    path,
                    size=len(data),
                    sop_instance_uid=info.sop_instance_uid,
                    study_instance_uid=info.study_instance_uid,
                    series_instance_uid=info.series_instance_uid,
                    sop_class_uid=info.sop_class_uid,
                    transfer_syntax_uid=info.transfer_syntax_uid,
                    sha256=hashlib.sha256(data).hexdigest(),
                    calling_ae="",
                    priority=2,
                )
                added += 1
        if added:
            log.warning("re-indexed %d spooled instances the index had lost", added)
        return added

    def _sync_index(self) -> None:
        """Make the last commit survive a power cut (fsync of the write-ahead log)."""
        fd = os.open(self.root / "index.sqlite3-wal", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _path_for(self, study_uid: str, sop_uid: str) -> Path:
        validate_uid(study_uid, name="StudyInstanceUID")
        validate_uid(sop_uid, name="SOPInstanceUID")
        return self.objects / study_uid / f"{sop_uid}.dcm"

    def stage(self, *parts: bytes) -> "StagedFile":
        """Start writing *parts* (one file: a Part-10 header and the data set, say) to
        ``tmp/`` synchronously (O_DSYNC) on a background thread, and hash them meanwhile.

        The caller checks the instance next (writing, syncing and hashing release the GIL),
        then calls :meth:`commit` or :meth:`discard`. Nothing is promised until commit returns.
        """
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        done = self._writer.submit(self._write, tmp, parts)
        return StagedFile(tmp, done, sum(len(part) for part in parts), _sha256(parts))

    def _write(self, path: Path, parts: tuple[bytes, ...]) -> None:
        if self.direct_io:
            try:
                _write_direct(path, parts)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct_io = False
                log.info("the spool's file system refuses direct I/O: writing through the cache")
        _write_synced(path, parts)

    def discard(self, staged: "StagedFile") -> None:
        """Drop a staged file (the instance was refused): nothing stays in the spool."""
        with contextlib.suppress(Exception):
            staged.done.result()
        staged.path.unlink(missing_ok=True)

    def commit(
        self,
        staged: "StagedFile",
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str = "",
        priority: int = 2,
    ) -> bool:
        """Durably store a staged instance; returns False if it replaced an identical one.

        Returns once the file, its directory entry and the index row are durable. A re-sent
        instance (same SOP Instance UID) replaces the stored file and is queued again unless it
        is byte-identical to one already queued or sent.
        """
        try:
            validate_uid(series_instance_uid, name="SeriesInstanceUID")
            final = self._path_for(study_instance_uid, sop_instance_uid)
        except InvalidDicomError:
            self.discard(staged)
            raise
        sha256 = staged.sha256
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, state FROM instances WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        if row is not None and row[0] == sha256 and row[1] in ("pending", "sent"):
            self.discard(staged)
            self._touch_study(study_instance_uid, calling_ae, priority)
            return False
        try:
            staged.done.result()
            if study_instance_uid not in self._durable_dirs:
                final.parent.mkdir(exist_ok=True)
                # The study directory's own entry; once per study and process (another
                # process may have created it without having fsync'd objects/ yet).
                _fsync_dir(self.objects)
                self._durable_dirs.add(study_instance_uid)
            os.replace(staged.path, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            staged.path.unlink(missing_ok=True)
            raise SpoolError("The spool could not durably store the instance.") from exc
        self._index(
            final,
            size=staged.size,
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            sha256=sha256,
            calling_ae=calling_ae,
            priority=priority,
        )
        if row is not None:
            # A replaced file: the re-indexing after a power cut would not see that the old
            # row is stale, so this commit is synced now.
            self._sync_index()
        return True

    def put(self, data: bytes, **identity: Any) -> bool:
        """:meth:`stage` and :meth:`commit` in one call (*identity*: commit's keywords)."""
        return self.commit(self.stage(data), **identity)

    def _index(
        self,
        final: Path,
        *,
        size: int,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        sha256: str,
        calling_ae: str,
        priority: int,
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                """INSERT INTO instances (sop_instance_uid, study_instance_uid,
                       series_instance_uid, sop_class_uid, transfer_syntax_uid, path, size,
                       sha256, priority, state, attempts, not_before, lease_until, last_error,
                       received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, 0, '', ?)
                   ON CONFLICT (sop_instance_uid) DO UPDATE SET
                       study_instance_uid = excluded.study_instance_uid,
                       series_instance_uid = excluded.series_instance_uid,
                       sop_class_uid = excluded.sop_class_uid,
                       transfer_syntax_uid = excluded.transfer_syntax_uid,
                       path = excluded.path, size = excluded.size, sha256 = excluded.sha256,
                       priority = excluded.priority, state = 'pending', attempts = 0,
                       not_before = 0, lease_until = 0, last_error = '',
                       received_at = excluded.received_at""",
                (
                    sop_instance_uid,
                    study_instance_uid,
                    series_instance_uid,
                    sop_class_uid,
                    transfer_syntax_uid,
                    str(final.relative_to(self.root)),
                    size,
                    sha256,
                    priority,
                    now,
                ),
            )
            self._upsert_study(db, study_instance_uid, calling_ae, priority, now)

    def _upsert_study(
        self, db: sqlite3.Connection, study_uid: str, calling_ae: str, priority: int, now: float
    ) -> None:
        db.execute(
            """INSERT INTO studies (study_instance_uid, calling_ae, priority, state,
                   last_received_at)
               VALUES (?, ?, ?, 'open', ?)
               ON CONFLICT (study_instance_uid) DO UPDATE SET
                   state = 'open', last_received_at = excluded.last_received_at,
                   priority = MIN(studies.priority, excluded.priority)""",
            (study_uid, calling_ae, priority, now),
        )

    def _touch_study(self, study_uid: str, calling_ae: str, priority: int) -> None:
        with self._tx() as db:
            self._upsert_study(db, study_uid, calling_ae, priority, time.time())

    # --- associations and study stability -------------------------------------------------

    def association_started(self, study_uids: list[str]) -> None:
        """Not used for stability: studies are known only once an instance arrives."""

    def association_released(self, study_uids: set[str]) -> None:
        """Restart the quiet period of the studies an association touched."""
        now = time.time()
        with self._tx() as db:
            for uid in study_uids:
                db.execute(
                    "UPDATE studies SET last_received_at = ? WHERE study_instance_uid = ?",
                    (now, uid),
                )

    def stable_studies(self, stability_seconds: float) -> list[str]:
        """Studies with no new instance for *stability_seconds* and none left pending."""
        cutoff = time.time() - stability_seconds
        with self._lock:
            rows = self._db.execute(
                """SELECT s.study_instance_uid FROM studies s
                   WHERE s.state = 'open' AND s.last_received_at <= ?
                     AND NOT EXISTS (SELECT 1 FROM instances i
                                     WHERE i.study_instance_uid = s.study_instance_uid
                                       AND i.state = 'pending')
                   ORDER BY s.priority, s.last_received_at""",
                (cutoff,),
            ).fetchall()
        return [r[0] for r in rows]

    def study_instances(self, study_uid: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT sop_instance_uid FROM instances WHERE study_instance_uid = ? "
                "AND state = 'sent' ORDER BY sop_instance_uid",
                (study_uid,),
            ).fetchall()
        return [r[0] for r in rows]

    def mark_study_done(self, study_uid: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET state = 'done', completed_at = ?, last_error = '' "
                "WHERE study_instance_uid = ? AND state = 'open'",
                (time.time(), study_uid),
            )

    def purge_forwarded(self, *, older_than_seconds: float, limit: int = 500) -> tuple[int, int]:
        """Delete forwarded copies: files and rows of sent instances of studies the hub
        confirmed more than *older_than_seconds* ago. Returns (instances, bytes) freed.

        Nothing pending or failed is touched. A file is moved aside first and deleted only if
        it still holds the bytes that were sent (SHA-256): if the modality re-sent the instance
        in that instant, the new file is put back and its row stays. A study whose instances
        are all gone leaves the index too (a late instance starts it again).
        """
        cutoff = time.time() - older_than_seconds
        with self._lock:
            rows = self._db.execute(
                """SELECT i.sop_instance_uid, i.study_instance_uid, i.path, i.sha256, i.size
                   FROM instances i JOIN studies s
                        ON s.study_instance_uid = i.study_instance_uid
                   WHERE i.state = 'sent' AND s.state = 'done' AND s.completed_at < ?
                   LIMIT ?""",
                (cutoff, limit),
            ).fetchall()
        freed = freed_bytes = 0
        studies: set[str] = set()
        for sop_uid, study_uid, path, sha256, size in rows:
            with self._tx() as db:
                deleted = db.execute(
                    "DELETE FROM instances WHERE sop_instance_uid = ? AND sha256 = ? "
                    "AND state = 'sent'",
                    (sop_uid, sha256),
                ).rowcount
            if not deleted:
                continue  # re-sent meanwhile: queued again, keep it
            if self._remove_if_unchanged(self.root / path, sha256):
                freed += 1
                freed_bytes += size
            studies.add(study_uid)
        for study_uid in studies:
            with self._tx() as db:
                left = db.execute(
                    "SELECT COUNT(*) FROM instances WHERE study_instance_uid = ?", (study_uid,)
                ).fetchone()[0]
                if left == 0:
                    db.execute(
                        "DELETE FROM studies WHERE study_instance_uid = ? AND state = 'done'",
                        (study_uid,),
                    )
            if left == 0:
                with contextlib.suppress(OSError):
                    (self.objects / study_uid).rmdir()  # only if empty
                self._durable_dirs.discard(study_uid)
        if freed:
            log.info("spool: deleted %d forwarded instances (%d bytes)", freed, freed_bytes)
        return freed, freed_bytes

    def _remove_if_unchanged(self, path: Path, sha256: str) -> bool:
        """Delete *path* if it still holds the bytes hashed *sha256*; see purge_forwarded."""
        aside = self.tmp / f"{uuid.uuid4().hex}.purge"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if hashlib.sha256(aside.read_bytes()).hexdigest() == sha256:
            aside.unlink()
            return True
        try:
            os.link(aside, path)  # a new version arrived in that instant: put it back
            aside.unlink()
        except FileExistsError:
            log.error("spool file %s changed twice while being purged; kept at %s", path, aside)
        return False

    def mark_study_error(self, study_uid: str, error: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE studies SET last_error = ? WHERE study_instance_uid = ?",
                (error[:500], study_uid),
            )

    # --- the forward queue -------------------------------------------------------------------

    def lease(self, n: int, lease_seconds: float = 300.0) -> list[SpooledInstance]:
        """Take up to *n* pending instances (STAT first) for upload."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute(
                """SELECT sop_instance_uid, study_instance_uid, series_instance_uid,
                          sop_class_uid, transfer_syntax_uid, path, size, sha256, attempts
                   FROM instances
                   WHERE state = 'pending' AND not_before <= ? AND lease_until <= ?
                   ORDER BY priority, received_at LIMIT ?""",
                (now, now, n),
            ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE instances SET lease_until = ? WHERE sop_instance_uid = ?",
                    (now + lease_seconds, row[0]),
                )
        return [
            SpooledInstance(
                sop_instance_uid=r[0],
                study_instance_uid=r[1],
                series_instance_uid=r[2],
                sop_class_uid=r[3],
                transfer_syntax_uid=r[4],
                path=self.root / r[5],
                size=r[6],
                sha256=r[7],
                attempts=r[8],
            )
            for r in rows
        ]

    def ack(self, sop_instance_uid: str, *, sha256: str, sent_bytes: int) -> None:
        """The hub holds the instance. Only the lease holder's version is acknowledged."""
        with self._tx() as db:
            db.execute(
                """UPDATE instances SET state = 'sent', sent_at = ?, sent_bytes = ?,
                       lease_until = 0, last_error = ''
                   WHERE sop_instance_uid = ? AND sha256 = ? AND state = 'pending'""",
                (time.time(), sent_bytes, sop_instance_uid, sha256),
            )

    def nack(self, sop_instance_uid: str, *, delay: float, error: str) -> None:
        with self._tx() as db:
            db.execute(
                """UPDATE instances SET attempts = attempts + 1, not_before = ?,
                       lease_until = 0, last_error = ?
                   WHERE sop_instance_uid = ? AND state = 'pending'""",
                (time.time() + delay, error[:500], sop_instance_uid),
            )

    def park(self, sop_instance_uid: str, *, error: str) -> None:
        """A permanent failure: keep the file, stop retrying, show the reason."""
        with self._tx() as db:
            db.execute(
                "UPDATE instances SET state = 'failed', lease_until = 0, last_error = ? "
                "WHERE sop_instance_uid = ?",
                (error[:500], sop_instance_uid),
            )

    def release_leases(self) -> int:
        """Make every leased instance available again; the forwarder calls it when it starts.

        Leases outlive a crash (kill -9, power cut) in the index; only one forwarder runs per
        spool, so at its start no upload is in flight and every lease is stale.
        """
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE instances SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0"
            )
        return cursor.rowcount

    def requeue(self, sop_instance_uids: list[str], *, error: str) -> int:
        """Queue sent instances again (the hub reported them missing); returns how many."""
        changed = 0
        with self._tx() as db:
            for uid in sop_instance_uids:
                changed += db.execute(
                    """UPDATE instances SET state = 'pending', attempts = 0, not_before = 0,
                           lease_until = 0, last_error = ?, sent_at = NULL, sent_bytes = NULL
                       WHERE sop_instance_uid = ? AND state = 'sent'""",
                    (error[:500], uid),
                ).rowcount
        return changed

    def study_totals(self, study_uid: str) -> tuple[int, int, int, float]:
        """(instances, received bytes, sent bytes, first received_at) of one study."""
        with self._lock:
            row = self._db.execute(
                """SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(sent_bytes), 0),
                          COALESCE(MIN(received_at), 0)
                   FROM instances WHERE study_instance_uid = ? AND state = 'sent'""",
                (study_uid,),
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), float(row[3])

    def count(self, name: str, increment: int = 1) -> None:
        """Add to a named counter kept in the index (shared by every process on the spool)."""
        with self._tx() as db:
            db.execute(
                """INSERT INTO meta (key, value) VALUES (?, ?)
                   ON CONFLICT (key) DO UPDATE SET
                       value = CAST(CAST(meta.value AS INTEGER) + ? AS TEXT)""",
                (f"counter:{name}", str(increment), increment),
            )

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = ?", (f"counter:{name}",)
            ).fetchone()
        return int(row[0]) if row else 0

    def totals(self) -> dict[str, int]:
        """Counts and bytes since the spool was created, for metrics and the heartbeat."""
        with self._lock:
            received, received_bytes, sent_bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(sent_bytes), 0) "
                "FROM instances"
            ).fetchone()
        return {
            "received": int(received),
            "received_bytes": int(received_bytes),
            "forwarded_bytes": int(sent_bytes),
            "refused": self.counter("refused"),
        }

    def read(self, item: SpooledInstance) -> bytes:
        return item.path.read_bytes()

    def stats(self) -> SpoolStats:
        with self._lock:
            pending, pending_bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances WHERE state = 'pending'"
            ).fetchone()
            sent = self._db.execute(
                "SELECT COUNT(*) FROM instances WHERE state = 'sent'"
            ).fetchone()[0]
            failed = self._db.execute(
                "SELECT COUNT(*) FROM instances WHERE state = 'failed'"
            ).fetchone()[0]
            open_studies = self._db.execute(
                "SELECT COUNT(*) FROM studies WHERE state = 'open'"
            ).fetchone()[0]
            last_sent = self._db.execute("SELECT MAX(sent_at) FROM instances").fetchone()[0]
            err = self._db.execute(
                "SELECT last_error FROM instances WHERE last_error != '' "
                "ORDER BY not_before DESC LIMIT 1"
            ).fetchone()
        return SpoolStats(
            pending=pending,
            pending_bytes=pending_bytes,
            sent=sent,
            failed=failed,
            open_studies=open_studies,
            last_sent_at=last_sent,
            last_error=err[0] if err else "",
        )

    def study_progress(self) -> list[dict[str, object]]:
        """Per-study progress for ``gateway status``."""
        with self._lock:
            rows = self._db.execute(
                """SELECT s.study_instance_uid, s.state, s.last_error,
                          SUM(i.state = 'sent'), COUNT(i.sop_instance_uid),
                          SUM(CASE WHEN i.state = 'pending' THEN i.size ELSE 0 END),
                          SUM(i.state = 'failed')
                   FROM studies s LEFT JOIN instances i
                        ON i.study_instance_uid = s.study_instance_uid
                   GROUP BY s.study_instance_uid ORDER BY s.last_received_at DESC LIMIT 50"""
            ).fetchall()
        return [
            {
                "study_instance_uid": r[0],
                "state": r[1],
                "last_error": r[2],
                "sent": r[3] or 0,
                "total": r[4] or 0,
                "pending_bytes": r[5] or 0,
                "failed": r[6] or 0,
            }
            for r in rows
        ]
