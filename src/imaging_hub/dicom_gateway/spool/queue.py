"""The forward queue of a spool: lease, ack, nack, park, requeue of instances.

The forwarder leases pending instances (STAT first), then acknowledges (``ack``), backs off
(``nack``: a retryable failure) or parks them (``park``: the hub refused the instance for good,
with its problem+json ``code`` and detail). A lease not acknowledged in time (crash) becomes
available again. A parked instance is tried again on the parking schedule — the delay doubles
with each park, from ``initial`` up to ``maximum`` (by default 1 min … 30 min) — or at once when
the operator asks (``imaging-hub gateway retry``); see :func:`parking_delay`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from imaging_hub.dicom_gateway.spool.index import Index, add_to_counters

#: The parking schedule's defaults: first retry after a minute, doubling, at most 30 minutes.
PARK_INITIAL_SECONDS = 60.0
PARK_MAX_SECONDS = 30 * 60.0


def parking_delay(parks: int, *, initial: float, maximum: float) -> float:
    """Seconds until the next try of something parked *parks* times before (0 the first)."""
    return float(min(maximum, initial * (2 ** min(parks, 30))))


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


class Queue:
    """The instances of a spool as a forward queue (see the module docstring)."""

    def __init__(self, index: Index, root: Path) -> None:
        self._index = index
        self._root = root

    def lease(self, n: int, lease_seconds: float = 300.0) -> list[SpooledInstance]:
        """Take up to *n* pending instances (STAT first) for upload."""
        now = time.time()
        with self._index.tx() as db:
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
                path=self._root / r[5],
                size=r[6],
                sha256=r[7],
                attempts=r[8],
            )
            for r in rows
        ]

    def ack(self, sop_instance_uid: str, *, sha256: str, sent_bytes: int) -> None:
        """The hub holds the instance. Only the lease holder's version is acknowledged."""
        with self._index.tx() as db:
            db.execute(
                """UPDATE instances SET state = 'sent', sent_at = ?, sent_bytes = ?,
                       lease_until = 0, last_error = '', error_code = ''
                   WHERE sop_instance_uid = ? AND sha256 = ? AND state = 'pending'""",
                (time.time(), sent_bytes, sop_instance_uid, sha256),
            )

    def nack(self, sop_instance_uid: str, *, delay: float, error: str, code: str = "") -> None:
        """A retryable failure: try again in *delay* seconds."""
        with self._index.tx() as db:
            db.execute(
                """UPDATE instances SET attempts = attempts + 1, not_before = ?,
                       lease_until = 0, last_error = ?, error_code = ?
                   WHERE sop_instance_uid = ? AND state = 'pending'""",
                (time.time() + delay, error[:500], code[:64], sop_instance_uid),
            )

    def park(
        self,
        sop_instance_uid: str,
        *,
        error: str,
        code: str = "",
        initial: float = PARK_INITIAL_SECONDS,
        maximum: float = PARK_MAX_SECONDS,
    ) -> float:
        """A refusal for good: keep the file, stop retrying until the parking schedule says,
        keep the reason (the hub's *code* and *error*). Returns the seconds until the next try.
        """
        now = time.time()
        with self._index.tx() as db:
            row = db.execute(
                "SELECT parks FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
            delay = parking_delay(row[0] if row else 0, initial=initial, maximum=maximum)
            db.execute(
                """UPDATE instances SET state = 'parked', lease_until = 0, last_error = ?,
                       error_code = ?, parks = parks + 1, parked_at = ?, not_before = ?
                   WHERE sop_instance_uid = ?""",
                (error[:500], code[:64], now, now + delay, sop_instance_uid),
            )
        return delay

    def release_leases(self) -> int:
        """Make every leased instance available again; the forwarder calls it when it starts.

        Leases outlive a crash (kill -9, power cut) in the index; only one forwarder runs per
        spool, so at its start no upload is in flight and every lease is stale.
        """
        with self._index.tx() as db:
            cursor = db.execute(
                "UPDATE instances SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0"
            )
        return cursor.rowcount

    def requeue(self, sop_instance_uids: list[str], *, error: str) -> int:
        """Queue sent instances again (the hub reported them missing); returns how many.

        What they were sent as stays counted (the totals are monotonic)."""
        changed = 0
        with self._index.tx() as db:
            for uid in sop_instance_uids:
                row = db.execute(
                    "SELECT COALESCE(sent_bytes, 0) FROM instances "
                    "WHERE sop_instance_uid = ? AND state = 'sent'",
                    (uid,),
                ).fetchone()
                if row is None:
                    continue
                add_to_counters(db, {"gone_forwarded": 1, "gone_forwarded_bytes": int(row[0])})
                changed += db.execute(
                    """UPDATE instances SET state = 'pending', attempts = 0, not_before = 0,
                           lease_until = 0, last_error = ?, sent_at = NULL, sent_bytes = NULL
                       WHERE sop_instance_uid = ? AND state = 'sent'""",
                    (error[:500], uid),
                ).rowcount
        return changed

    def unpark_due(self, now: float | None = None) -> int:
        """Queue again the parked instances whose next try is due; their studies reopen (to be
        completed again once the instances are through). Returns how many."""
        at = time.time() if now is None else now
        with self._index.tx() as db:
            studies = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT study_instance_uid FROM instances "
                    "WHERE state = 'parked' AND not_before <= ?",
                    (at,),
                )
            ]
            count = db.execute(
                "UPDATE instances SET state = 'pending', lease_until = 0 "
                "WHERE state = 'parked' AND not_before <= ?",
                (at,),
            ).rowcount
            for study_uid in studies:
                db.execute(
                    "UPDATE studies SET state = 'open', not_before = 0 "
                    "WHERE study_instance_uid = ? AND state IN ('parked', 'done')",
                    (study_uid,),
                )
        return count

    def retry_parked(self, study_uid: str | None = None) -> int:
        """The operator's retry: queue the parked instances of *study_uid* (or all) at once."""
        with self._index.tx() as db:
            if study_uid is None:
                return db.execute(
                    "UPDATE instances SET not_before = 0 WHERE state = 'parked'"
                ).rowcount
            return db.execute(
                "UPDATE instances SET not_before = 0 "
                "WHERE state = 'parked' AND study_instance_uid = ?",
                (study_uid,),
            ).rowcount
