"""The gateway's durable spool: instance files on disk plus an index in SQLite (WAL mode).

``put`` (or ``stage`` and then ``commit``) returns only once the instance file and its directory
entry are fsync'd and the index row is committed, so C-STORE Success is answered only for
instances that survive a crash or a power cut. After a power cut, opening the spool re-indexes
the fsync'd files whose rows were lost, with their UIDs and requested priority read back from the
file's header (the file is the durable record; nothing else is needed to rebuild a row).

The parts, by job:

- :mod:`.files` — durable file writing (staging in ``tmp/``, direct I/O, fsync), ``objects/``;
- :mod:`.index` — the SQLite index, its schema and transactions;
- :mod:`.queue` — the forward queue of instances: lease, ack, nack, park, requeue;
- :mod:`.studies` — completion triggers, open associations, done, errors and parking,
  retention purge;
- MPPS steps and their outbox live in the same index (:mod:`imaging_hub.dicom_gateway.mpps`);
- :mod:`.stats` — counters, monotonic totals, state and per-study progress.

:class:`Spool` composes them and keeps the one C-STORE path (``stage``/``commit``) as lean as
before: one file write, two directory fsyncs at most, one transaction.
"""

import contextlib
import hashlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from imaging_hub.dicom.attributes import parse_instance
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.dicom_gateway.spool.files import (
    DIRECT_ALIGNMENT,
    KEPT_DIRECT_BUFFER_BYTES,
    SpoolFiles,
    StagedFile,
)
from imaging_hub.dicom_gateway.spool.index import Index, add_to_counters
from imaging_hub.dicom_gateway.spool.queue import (
    PARK_INITIAL_SECONDS,
    PARK_MAX_SECONDS,
    Queue,
    SpooledInstance,
    parking_delay,
)
from imaging_hub.dicom_gateway.spool.space import SpaceGuard
from imaging_hub.dicom_gateway.spool.stats import ParkedStudy, SpoolStats, Stats
from imaging_hub.dicom_gateway.spool.studies import (
    MAX_ASSOCIATION_SECONDS,
    OrderHint,
    ReadyStudy,
    Studies,
    upsert_study,
)
from imaging_hub.errors import InvalidDicomError, SpoolError

__all__ = [
    "DIRECT_ALIGNMENT",
    "KEPT_DIRECT_BUFFER_BYTES",
    "MAX_ASSOCIATION_SECONDS",
    "PARK_INITIAL_SECONDS",
    "PARK_MAX_SECONDS",
    "OrderHint",
    "ParkedStudy",
    "ReadyStudy",
    "SpaceGuard",
    "Spool",
    "SpoolStats",
    "SpooledInstance",
    "StagedFile",
    "parking_delay",
]

log = logging.getLogger(__name__)


class Spool:
    """One spool directory: ``objects/`` for files, ``index.sqlite3`` for the queue."""

    def __init__(
        self,
        root: Path,
        *,
        clean_tmp: bool = True,
        direct_io: bool = True,
        min_free_bytes: int = 0,
        min_free_percent: float = 0.0,
    ) -> None:
        """Open (or create) the spool. Several processes may open one spool; only the first
        (the gateway's main process, before its SCP workers start) cleans ``tmp/`` and
        re-indexes orphaned files. With *direct_io*, instance files are written by direct I/O
        where the file system has it. *min_free_bytes* / *min_free_percent*: the free-space
        floor below which the SCP refuses instances (:attr:`space`; 0 and 0: no floor)."""
        self.root = root
        self.files = SpoolFiles(root, direct_io=direct_io)
        self.space = SpaceGuard(
            root, min_free_bytes=min_free_bytes, min_free_percent=min_free_percent
        )
        self.index = Index(root)
        self.queue = Queue(self.index, root)
        self.studies = Studies(self.index, self.files)
        self.figures = Stats(self.index)
        # The parts' methods, bound once (the C-STORE path and the forwarder call them often).
        self.stage = self.files.stage
        self.discard = self.files.discard
        self.lease = self.queue.lease
        self.ack = self.queue.ack
        self.nack = self.queue.nack
        self.park = self.queue.park
        self.release_leases = self.queue.release_leases
        self.requeue = self.queue.requeue
        self.association_opened = self.studies.association_opened
        self.association_closed = self.studies.association_closed
        self.drop_stale_associations = self.studies.drop_stale_associations
        self.open_association_studies = self.studies.open_association_studies
        self.ready_studies = self.studies.ready_studies
        self.study_instances = self.studies.study_instances
        self.mark_study_done = self.studies.mark_study_done
        self.mark_study_error = self.studies.mark_study_error
        self.study_attempts = self.studies.study_attempts
        self.park_study = self.studies.park_study
        self.park_if_refused = self.studies.park_if_refused
        self.purge_forwarded = self.studies.purge_forwarded
        self.count = self.figures.count
        self.counter = self.figures.counter
        self.totals = self.figures.totals
        self.study_totals = self.figures.study_totals
        self.stats = self.figures.stats
        self.parked = self.figures.parked
        self.study_progress = self.figures.study_progress
        self.reindexed = 0
        if clean_tmp:
            self.files.clean_tmp()
            self.reindexed = self._reindex_orphans()
            # No SCP process runs yet: an association recorded as open is of a past run.
            stale = self.studies.clear_open_associations()
            if stale:
                log.info("%d open association record(s) of a past run removed", stale)

    @property
    def objects(self) -> Path:
        return self.files.objects

    @property
    def tmp(self) -> Path:
        return self.files.tmp

    @property
    def direct_io(self) -> bool:
        return self.files.direct_io

    def close(self) -> None:
        self.files.close()
        self.index.close()

    def read(self, item: SpooledInstance) -> bytes:
        return item.path.read_bytes()

    # --- storing instances (the C-STORE path) ---------------------------------------------

    def commit(
        self,
        staged: StagedFile,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        calling_ae: str = "",
        priority: int = 2,
        accession_number: str = "",
    ) -> bool:
        """Durably store a staged instance; returns False if it replaced an identical one.

        Returns once the file, its directory entry and the index row are durable. A re-sent
        instance (same SOP Instance UID) replaces the stored file and is queued again unless it
        is byte-identical to one already queued or sent.
        """
        try:
            validate_uid(series_instance_uid, name="SeriesInstanceUID")
            final = self.files.path_for(study_instance_uid, sop_instance_uid)
        except InvalidDicomError:
            self.discard(staged)
            raise
        sha256 = staged.sha256
        with self.index.lock:
            row = self.index.db.execute(
                "SELECT sha256, state FROM instances WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        if row is not None and row[0] == sha256 and row[1] in ("pending", "sent"):
            self.discard(staged)
            try:
                self.studies.touch(study_instance_uid, calling_ae, priority)
            except sqlite3.Error as exc:
                raise SpoolError(f"The spool index could not record the instance: {exc}") from exc
            return False
        self.files.place(staged, final, study_instance_uid)
        try:
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
                accession_number=accession_number,
                replaces=row is not None,
            )
        except sqlite3.Error as exc:
            # Not acknowledged, so not kept: a new instance's file leaves objects/ again (a
            # replaced one stays: it is a complete, checked instance the old row points to).
            if row is None:
                with contextlib.suppress(OSError):
                    final.unlink()
                    self.files.forget_study(study_instance_uid)
            raise SpoolError(f"The spool index could not record the instance: {exc}") from exc
        if row is not None:
            # A replaced file: the re-indexing after a power cut would not see that the old
            # row is stale, so this commit is synced now.
            self.index.sync()
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
        accession_number: str = "",
        replaces: bool = False,
    ) -> None:
        now = time.time()
        with self.index.tx() as db:
            if replaces:
                # The replaced version was received (and perhaps forwarded): it stays counted.
                old = db.execute(
                    "SELECT size, state, COALESCE(sent_bytes, 0) FROM instances "
                    "WHERE sop_instance_uid = ?",
                    (sop_instance_uid,),
                ).fetchone()
                if old is not None:
                    sent = old[1] == "sent"
                    add_to_counters(
                        db,
                        {
                            "gone_received": 1,
                            "gone_received_bytes": int(old[0]),
                            "gone_forwarded": int(sent),
                            "gone_forwarded_bytes": int(old[2]) if sent else 0,
                        },
                    )
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
                       not_before = 0, lease_until = 0, last_error = '', error_code = '',
                       sent_at = NULL, sent_bytes = NULL,
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
            upsert_study(db, study_instance_uid, calling_ae, priority, now, accession_number)

    def _reindex_orphans(self) -> int:
        """Queue instance files the index does not know (its last commits lost in a power cut).

        Files reach ``objects/`` only after every check passed, so an orphan is a complete,
        checked instance; forwarding one that was never acknowledged is harmless (idempotent).
        Its priority is read back from its header (Requested Procedure Priority, as at
        C-STORE), so a STAT study keeps its place.
        """
        with self.index.lock:
            known = {r[0] for r in self.index.db.execute("SELECT sop_instance_uid FROM instances")}
        added = 0
        for study_dir, path in self.files.stored():
            if path.stem in known:
                continue
            try:
                data = path.read_bytes()
                info = parse_instance(data)
            except (OSError, InvalidDicomError) as exc:
                log.error("spool file %s is unreadable and stays unqueued: %s", path, exc)
                continue
            if info.sop_instance_uid != path.stem or info.study_instance_uid != study_dir:
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
                priority=info.priority_rank,
                accession_number=info.accession_number,
            )
            added += 1
        if added:
            log.warning("re-indexed %d spooled instances the index had lost", added)
        return added

    # --- parking ----------------------------------------------------------------------------

    def unpark_due(self) -> int:
        """Queue again what was parked and is due on the parking schedule; returns how many
        instances and studies."""
        now = time.time()
        return self.queue.unpark_due(now) + self.studies.unpark_due(now)

    def retry(self, study_uid: str | None = None) -> tuple[int, int]:
        """The operator's ``gateway retry``: what is parked (of *study_uid*, or everything),
        and a completion backing off, is tried at the forwarder's next turn, without waiting
        for the parking schedule. Returns (studies, instances) made due."""
        if study_uid is not None:
            validate_uid(study_uid, name="StudyInstanceUID")
        instances = self.queue.retry_parked(study_uid)
        studies = self.studies.retry_parked(study_uid)
        return studies, instances
