"""The studies of a spool: stability, completion (done), errors and parking, retention.

A study is ``open`` while instances may still come; once it had no new instance for the quiet
period and none is left pending, it is *stable* and the forwarder tells the hub it is complete.
The hub's answer makes it ``done``, or — when the hub refuses it for good (problem+json code
such as ``not_found`` or ``uid_conflict``) — ``parked`` with that reason, tried again on the
parking schedule (see :mod:`.queue`) or when the operator asks. A study none of whose instances
the hub took (all parked) is parked with its instances' reason without asking the hub. A
retryable failure of the completion backs off (``not_before``) instead of being repeated at
every turn of the forwarder.
"""

import logging
import sqlite3
import time

from imaging_hub.dicom_gateway.spool.files import SpoolFiles
from imaging_hub.dicom_gateway.spool.index import Index, add_to_counters
from imaging_hub.dicom_gateway.spool.queue import (
    PARK_INITIAL_SECONDS,
    PARK_MAX_SECONDS,
    parking_delay,
)

log = logging.getLogger(__name__)


def upsert_study(
    db: sqlite3.Connection, study_uid: str, calling_ae: str, priority: int, now: float
) -> None:
    """An instance of the study arrived (inside the caller's transaction): open it again."""
    db.execute(
        """INSERT INTO studies (study_instance_uid, calling_ae, priority, state,
               last_received_at)
           VALUES (?, ?, ?, 'open', ?)
           ON CONFLICT (study_instance_uid) DO UPDATE SET
               state = 'open', last_received_at = excluded.last_received_at, not_before = 0,
               priority = MIN(studies.priority, excluded.priority)""",
        (study_uid, calling_ae, priority, now),
    )


class Studies:
    """The study rows of a spool (see the module docstring)."""

    def __init__(self, index: Index, files: SpoolFiles) -> None:
        self._index = index
        self._files = files

    def touch(self, study_uid: str, calling_ae: str, priority: int) -> None:
        with self._index.tx() as db:
            upsert_study(db, study_uid, calling_ae, priority, time.time())

    def association_released(self, study_uids: set[str]) -> None:
        """Restart the quiet period of the studies an association touched."""
        now = time.time()
        with self._index.tx() as db:
            for uid in study_uids:
                db.execute(
                    "UPDATE studies SET last_received_at = ? WHERE study_instance_uid = ?",
                    (now, uid),
                )

    def stable_studies(self, stability_seconds: float) -> list[str]:
        """Open studies with no new instance for *stability_seconds*, none left pending, and
        no completion attempt due later (a retryable failure backs off)."""
        now = time.time()
        with self._index.lock:
            rows = self._index.db.execute(
                """SELECT s.study_instance_uid FROM studies s
                   WHERE s.state = 'open' AND s.last_received_at <= ? AND s.not_before <= ?
                     AND NOT EXISTS (SELECT 1 FROM instances i
                                     WHERE i.study_instance_uid = s.study_instance_uid
                                       AND i.state = 'pending')
                   ORDER BY s.priority, s.last_received_at""",
                (now - stability_seconds, now),
            ).fetchall()
        return [r[0] for r in rows]

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
        return freed, freed_bytes
