"""The studies of a spool: completion triggers, open associations, done, errors and parking,
retention.

A study is ``open`` while instances may still come. Its completion is due (`ready_studies`)
when none of its instances is pending, no association still open carries it, and one trigger
holds: its MPPS step is COMPLETED with every referenced instance at the hub, its order is done
or its expected number of images reached (the gateway's order cache), or it had no new
instance for the quiet period (the stability window). The forwarder then tells the hub it is
complete.
The hub's answer makes it ``done``, or — when the hub refuses it for good (problem+json code
such as ``not_found`` or ``uid_conflict``) — ``parked`` with that reason, tried again on the
parking schedule (see :mod:`.queue`) or when the operator asks. A study none of whose instances
the hub took (all parked) is parked with its instances' reason without asking the hub. A
retryable failure of the completion backs off (``not_before``) instead of being repeated at
every turn of the forwarder.
"""

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from imaging_hub.dicom_gateway.spool.files import SpoolFiles
from imaging_hub.dicom_gateway.spool.index import Index, add_to_counters
from imaging_hub.dicom_gateway.spool.queue import (
    PARK_INITIAL_SECONDS,
    PARK_MAX_SECONDS,
    parking_delay,
)

log = logging.getLogger(__name__)


def _process_alive(pid: int) -> bool:
    """Whether a process with *pid* runs on this host (the spool is local to it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def upsert_study(
    db: sqlite3.Connection,
    study_uid: str,
    calling_ae: str,
    priority: int,
    now: float,
    accession_number: str = "",
) -> None:
    """An instance of the study arrived (inside the caller's transaction): open it again. A
    non-empty *accession_number* is kept (it matches the study to an order)."""
    db.execute(
        """INSERT INTO studies (study_instance_uid, calling_ae, priority, state,
               last_received_at, accession_number)
           VALUES (?, ?, ?, 'open', ?, ?)
           ON CONFLICT (study_instance_uid) DO UPDATE SET
               state = 'open', last_received_at = excluded.last_received_at, not_before = 0,
               priority = MIN(studies.priority, excluded.priority),
               accession_number = CASE WHEN excluded.accession_number != ''
                   THEN excluded.accession_number ELSE studies.accession_number END""",
        (study_uid, calling_ae, priority, now, accession_number),
    )


class OrderHint(Protocol):
    """What the order cache says about one order (``dicom_gateway.mwl.OrderHint``)."""

    @property
    def study_instance_uid(self) -> str: ...

    @property
    def accession_number(self) -> str: ...

    @property
    def expected_images(self) -> int: ...

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True)
class ReadyStudy:
    """A study whose completion is due now, why (the trigger), and the instances to list."""

    study_instance_uid: str
    trigger: str  # "mpps" | "order_done" | "expected_images" | "stability"
    sop_instance_uids: list[str]


#: An MPPS step left IN PROGRESS this long is forgotten (with the retention purge).
ABANDONED_STEP_SECONDS = 7 * 86400.0

#: An association open longer than this no longer keeps its studies from completing.
MAX_ASSOCIATION_SECONDS = 6 * 3600.0


class Studies:
    """The study rows of a spool (see the module docstring)."""

    def __init__(self, index: Index, files: SpoolFiles) -> None:
        self._index = index
        self._files = files

    def touch(self, study_uid: str, calling_ae: str, priority: int) -> None:
        with self._index.tx() as db:
            upsert_study(db, study_uid, calling_ae, priority, time.time())

    # --- associations still open (a study they carry is never complete) -------------------

    def association_opened(self, association: str, study_uid: str, calling_ae: str = "") -> None:
        """An open association (*association*: "<pid>:<id>") carries *study_uid*: record it
        before the study's first instance of that association is committed."""
        with self._index.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO open_associations "
                "(association, study_instance_uid, pid, calling_ae, opened_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (association, study_uid, os.getpid(), calling_ae[:16], time.time()),
            )

    def association_closed(self, association: str) -> list[str]:
        """The association ended (release, abort, connection closed): its studies are free
        again, and their quiet period starts now. Returns those studies."""
        now = time.time()
        with self._index.tx() as db:
            studies = [
                r[0]
                for r in db.execute(
                    "DELETE FROM open_associations WHERE association = ? "
                    "RETURNING study_instance_uid",
                    (association,),
                )
            ]
            for uid in studies:
                db.execute(
                    "UPDATE studies SET last_received_at = MAX(last_received_at, ?) "
                    "WHERE study_instance_uid = ?",
                    (now, uid),
                )
        return studies

    def clear_open_associations(self) -> int:
        """At the gateway's start (no SCP process runs yet): every row is of a past run."""
        with self._index.tx() as db:
            return db.execute("DELETE FROM open_associations").rowcount

    def drop_stale_associations(
        self, max_association_seconds: float = MAX_ASSOCIATION_SECONDS
    ) -> int:
        """Remove the rows of SCP processes that are gone (a crashed worker) and of
        associations open longer than *max_association_seconds* (logged); returns how many."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT association, study_instance_uid, pid, calling_ae, opened_at "
                "FROM open_associations"
            ).fetchall()
        cutoff = time.time() - max_association_seconds
        stale: list[tuple[str, str]] = []
        for association, study_uid, pid, calling_ae, opened_at in rows:
            if not _process_alive(int(pid)):
                log.warning(
                    "study %s: the process %s that held its association from %s is gone; "
                    "the study may complete",
                    study_uid,
                    pid,
                    calling_ae or "-",
                )
                stale.append((association, study_uid))
            elif opened_at < cutoff:
                log.warning(
                    "study %s: the association from %s has been open for %.0f s, longer than "
                    "%.0f s; it no longer keeps the study from completing",
                    study_uid,
                    calling_ae or "-",
                    time.time() - opened_at,
                    max_association_seconds,
                )
                stale.append((association, study_uid))
        if stale:
            with self._index.tx() as db:
                db.executemany(
                    "DELETE FROM open_associations WHERE association = ? "
                    "AND study_instance_uid = ?",
                    stale,
                )
        return len(stale)

    def open_association_studies(self) -> list[dict[str, object]]:
        """The studies open associations carry (for the status)."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT study_instance_uid, calling_ae, MIN(opened_at), COUNT(*) "
                "FROM open_associations GROUP BY study_instance_uid ORDER BY 3"
            ).fetchall()
        return [
            {
                "study_instance_uid": r[0],
                "calling_ae": r[1],
                "opened_at": r[2],
                "associations": r[3],
            }
            for r in rows
        ]

    # --- completion ------------------------------------------------------------------------

    def ready_studies(
        self,
        stability_seconds: float,
        *,
        hints: "Iterable[OrderHint] | None" = None,
        max_association_seconds: float = MAX_ASSOCIATION_SECONDS,
    ) -> list[ReadyStudy]:
        """Open studies whose completion is due now, with the first trigger that holds.

        Every trigger requires that none of the study's instances is pending, no completion
        attempt is due later (a retryable failure backs off) and no association still open
        (younger than *max_association_seconds*) carries the study. Then, in order:

        - ``mpps``: an MPPS step of the study is COMPLETED, none is IN PROGRESS, and every
          instance the completed steps reference (at least one) is at the hub;
        - ``order_done``: the study's order (by StudyInstanceUID, else accession number, in
          *hints*) is done ("exam done" clicked, or the hub's order feed says so);
        - ``expected_images``: the hub holds at least the order's expected number of images;
        ``order_done`` only for a study without MPPS steps (machines without MPPS): the order
        of a modality that reports its steps is done by its own MPPS COMPLETED, which says
        with which images — the images may still be on their way;
        - ``stability``: no new instance (and no association end) for *stability_seconds*.
        """
        now = time.time()
        with self._index.lock:
            rows = self._index.db.execute(
                """SELECT s.study_instance_uid, s.accession_number, s.last_received_at
                   FROM studies s
                   WHERE s.state = 'open' AND s.not_before <= ?
                     AND NOT EXISTS (SELECT 1 FROM instances i
                                     WHERE i.study_instance_uid = s.study_instance_uid
                                       AND i.state = 'pending')
                     AND NOT EXISTS (SELECT 1 FROM open_associations a
                                     WHERE a.study_instance_uid = s.study_instance_uid
                                       AND a.opened_at > ?)
                   ORDER BY s.priority, s.last_received_at""",
                (now, now - max_association_seconds),
            ).fetchall()
        if not rows:
            return []
        with self._index.lock:
            any_steps = self._index.db.execute(
                "SELECT EXISTS (SELECT 1 FROM mpps_steps)"
            ).fetchone()[0]
        by_uid: dict[str, OrderHint] = {}
        by_accession: dict[str, OrderHint] = {}
        for item in hints or ():
            if item.study_instance_uid:
                by_uid.setdefault(item.study_instance_uid, item)
            if item.accession_number:
                by_accession.setdefault(item.accession_number, item)
        ready: list[ReadyStudy] = []
        for study_uid, accession, last_received_at in rows:
            hint = by_uid.get(study_uid)
            if hint is None and accession:
                hint = by_accession.get(accession)
            trigger = ""
            steps, complete = self._mpps_state(study_uid) if any_steps else (0, False)
            if complete:
                trigger = "mpps"
            elif hint is not None and hint.done and not steps:
                trigger = "order_done"
            elif hint is not None and 0 < hint.expected_images <= self._sent_count(study_uid):
                trigger = "expected_images"
            if not trigger and last_received_at <= now - stability_seconds:
                trigger = "stability"
            if trigger:
                ready.append(ReadyStudy(study_uid, trigger, self.study_instances(study_uid)))
        return ready

    def _sent_count(self, study_uid: str) -> int:
        with self._index.lock:
            row = self._index.db.execute(
                "SELECT COUNT(*) FROM instances WHERE study_instance_uid = ? AND state = 'sent'",
                (study_uid,),
            ).fetchone()
        return int(row[0])

    def _mpps_state(self, study_uid: str) -> tuple[int, bool]:
        """The study's MPPS steps, and whether they say it is whole with every referenced
        instance at the hub."""
        with self._index.lock:
            row = self._index.db.execute(
                """WITH steps AS (
                       SELECT mpps_uid, state FROM mpps_steps WHERE study_instance_uid = :study
                       UNION
                       SELECT m.mpps_uid, m.state FROM mpps_steps m
                       WHERE m.mpps_uid IN (SELECT r.mpps_uid FROM mpps_instances r
                                            JOIN instances i
                                              ON i.sop_instance_uid = r.sop_instance_uid
                                            WHERE i.study_instance_uid = :study))
                   SELECT
                       (SELECT COUNT(*) FROM steps),
                       (SELECT COUNT(*) FROM steps WHERE state = 'COMPLETED'),
                       (SELECT COUNT(*) FROM steps WHERE state = 'IN PROGRESS'),
                       (SELECT COUNT(*) FROM mpps_instances r
                        WHERE r.mpps_uid IN (SELECT mpps_uid FROM steps
                                             WHERE state = 'COMPLETED')),
                       (SELECT COUNT(*) FROM mpps_instances r JOIN instances i
                          ON i.sop_instance_uid = r.sop_instance_uid AND i.state = 'sent'
                        WHERE r.mpps_uid IN (SELECT mpps_uid FROM steps
                                             WHERE state = 'COMPLETED'))""",
                {"study": study_uid},
            ).fetchone()
        steps, completed, in_progress, referenced, sent = row
        return steps, bool(completed and not in_progress and referenced and sent >= referenced)

    def study_instances(self, study_uid: str) -> list[str]:
        """The instances of the study the hub holds (acknowledged uploads)."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT sop_instance_uid FROM instances WHERE study_instance_uid = ? "
                "AND state = 'sent' ORDER BY sop_instance_uid",
                (study_uid,),
            ).fetchall()
        return [r[0] for r in rows]

    def mark_study_done(self, study_uid: str) -> None:
        with self._index.tx() as db:
            db.execute(
                "UPDATE studies SET state = 'done', completed_at = ?, last_error = '', "
                "error_code = '', attempts = 0, not_before = 0 "
                "WHERE study_instance_uid = ? AND state = 'open'",
                (time.time(), study_uid),
            )

    def mark_study_error(
        self, study_uid: str, error: str, *, code: str = "", delay: float = 0.0
    ) -> None:
        """A retryable failure of the study's completion: keep the reason, try again in
        *delay* seconds (0: at the forwarder's next turn)."""
        with self._index.tx() as db:
            db.execute(
                "UPDATE studies SET last_error = ?, error_code = ?, attempts = attempts + 1, "
                "not_before = ? WHERE study_instance_uid = ?",
                (error[:500], code[:64], time.time() + delay if delay else 0, study_uid),
            )

    def study_attempts(self, study_uid: str) -> int:
        with self._index.lock:
            row = self._index.db.execute(
                "SELECT attempts FROM studies WHERE study_instance_uid = ?", (study_uid,)
            ).fetchone()
        return int(row[0]) if row else 0

    def park_study(
        self,
        study_uid: str,
        *,
        error: str,
        code: str,
        initial: float = PARK_INITIAL_SECONDS,
        maximum: float = PARK_MAX_SECONDS,
    ) -> float:
        """The hub refused the study for good: park it with the reason; returns the seconds
        until the next try (the parking schedule)."""
        now = time.time()
        with self._index.tx() as db:
            row = db.execute(
                "SELECT parks FROM studies WHERE study_instance_uid = ?", (study_uid,)
            ).fetchone()
            delay = parking_delay(row[0] if row else 0, initial=initial, maximum=maximum)
            db.execute(
                """UPDATE studies SET state = 'parked', last_error = ?, error_code = ?,
                       parks = parks + 1, parked_at = ?, not_before = ?
                   WHERE study_instance_uid = ? AND state = 'open'""",
                (error[:500], code[:64], now, now + delay, study_uid),
            )
        return delay

    def park_if_refused(self, study_uid: str) -> bool:
        """Park a stable study none of whose instances the hub took (every one parked) with
        their reason, without asking the hub; it reopens when they are tried again."""
        with self._index.tx() as db:
            sent, parked, next_try = db.execute(
                """SELECT COALESCE(SUM(state = 'sent'), 0), COALESCE(SUM(state = 'parked'), 0),
                          MIN(CASE WHEN state = 'parked' THEN not_before END)
                   FROM instances WHERE study_instance_uid = ?""",
                (study_uid,),
            ).fetchone()
            if sent or not parked:
                return False
            code, error = db.execute(
                "SELECT error_code, last_error FROM instances "
                "WHERE study_instance_uid = ? AND state = 'parked' "
                "ORDER BY parked_at DESC LIMIT 1",
                (study_uid,),
            ).fetchone()
            db.execute(
                """UPDATE studies SET state = 'parked', last_error = ?, error_code = ?,
                       parks = parks + 1, parked_at = ?, not_before = ?
                   WHERE study_instance_uid = ? AND state = 'open'""",
                (
                    f"{parked} instance(s) refused: {error}"[:500],
                    code,
                    time.time(),
                    next_try or 0,
                    study_uid,
                ),
            )
        return True

    def unpark_due(self, now: float | None = None) -> int:
        """Reopen the parked studies whose next try is due; returns how many."""
        at = time.time() if now is None else now
        with self._index.tx() as db:
            return db.execute(
                "UPDATE studies SET state = 'open' WHERE state = 'parked' AND not_before <= ?",
                (at,),
            ).rowcount

    def retry_parked(self, study_uid: str | None = None) -> int:
        """The operator's retry: make the parked studies (or *study_uid*) due at once, and a
        completion in back-off too. Returns how many studies."""
        where = "state IN ('parked', 'open') AND (not_before > 0 OR state = 'parked')"
        with self._index.tx() as db:
            if study_uid is None:
                return db.execute(f"UPDATE studies SET not_before = 0 WHERE {where}").rowcount
            return db.execute(
                f"UPDATE studies SET not_before = 0 WHERE {where} AND study_instance_uid = ?",
                (study_uid,),
            ).rowcount

    def purge_forwarded(self, *, older_than_seconds: float, limit: int = 500) -> tuple[int, int]:
        """Delete forwarded copies: files and rows of sent instances of studies the hub
        confirmed more than *older_than_seconds* ago. Returns (instances, bytes) freed.

        Nothing pending or parked is touched. A file is moved aside first and deleted only if
        it still holds the bytes that were sent (SHA-256): if the modality re-sent the instance
        in that instant, the new file is put back and its row stays. A study whose instances
        are all gone leaves the index too (a late instance starts it again). What a deleted
        row counted is added to the ``gone_*`` counters in the same transaction, so the
        totals since the spool was created never go down.
        """
        cutoff = time.time() - older_than_seconds
        with self._index.lock:
            rows = self._index.db.execute(
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
            with self._index.tx() as db:
                gone = db.execute(
                    "DELETE FROM instances WHERE sop_instance_uid = ? AND sha256 = ? "
                    "AND state = 'sent' RETURNING size, COALESCE(sent_bytes, 0)",
                    (sop_uid, sha256),
                ).fetchall()
                for gone_size, gone_sent in gone:
                    add_to_counters(
                        db,
                        {
                            "gone_received": 1,
                            "gone_received_bytes": int(gone_size),
                            "gone_forwarded": 1,
                            "gone_forwarded_bytes": int(gone_sent),
                        },
                    )
            if not gone:
                continue  # re-sent meanwhile: queued again, keep it
            if self._files.remove_if_unchanged(self._files.root / path, sha256):
                freed += 1
                freed_bytes += size
            studies.add(study_uid)
        for study_uid in studies:
            with self._index.tx() as db:
                left = db.execute(
                    "SELECT COUNT(*) FROM instances WHERE study_instance_uid = ?", (study_uid,)
                ).fetchone()[0]
                if left == 0:
                    db.execute(
                        "DELETE FROM studies WHERE study_instance_uid = ? AND state = 'done'",
                        (study_uid,),
                    )
            if left == 0:
                self._files.forget_study(study_uid)
        if freed:
            log.info("spool: deleted %d forwarded instances (%d bytes)", freed, freed_bytes)
        self._purge_mpps(cutoff)
        return freed, freed_bytes

    def _purge_mpps(self, cutoff: float) -> None:
        """Forget MPPS steps the hub has (nothing in the outbox) that ended before *cutoff*,
        and steps left IN PROGRESS for a week (a machine that never sent N-SET)."""
        abandoned = min(cutoff, time.time() - ABANDONED_STEP_SECONDS)
        with self._index.tx() as db:
            gone = [
                r[0]
                for r in db.execute(
                    """DELETE FROM mpps_steps
                       WHERE mpps_uid NOT IN (SELECT mpps_uid FROM mpps_outbox)
                         AND ((state != 'IN PROGRESS' AND updated_at < ?)
                              OR updated_at < ?)
                       RETURNING mpps_uid""",
                    (cutoff, abandoned),
                )
            ]
            db.executemany("DELETE FROM mpps_instances WHERE mpps_uid = ?", [(u,) for u in gone])
        if gone:
            log.info("spool: forgot %d MPPS steps past the retention", len(gone))
