"""Figures of a spool: counters, totals since the spool was created, state, per-study progress.

Totals are monotonic (Prometheus counters): they are the figures of the rows in the index plus
the ``gone_*`` counters, to which every row that leaves the index or stops counting (the
retention purge, a replaced instance, an instance the hub lost and that is queued again) adds
its figures in the same transaction. The C-STORE path writes no counter: it costs nothing per
instance.
"""

import time
from dataclasses import dataclass
from typing import Any

from imaging_hub.dicom_gateway.spool.index import Index, add_to_counters, read_counters


@dataclass(frozen=True)
class SpoolStats:
    pending: int
    pending_bytes: int
    sent: int
    failed: int
    open_studies: int
    last_sent_at: float | None
    last_error: str
    parked_studies: int = 0


@dataclass(frozen=True)
class ParkedStudy:
    """A study the hub refused for good (or one with refused instances), and why."""

    study_instance_uid: str
    code: str
    reason: str
    instances: int
    parked_at: float | None
    next_try_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class Stats:
    def __init__(self, index: Index) -> None:
        self._index = index

    def count(self, name: str, increment: int = 1) -> None:
        """Add to a named counter kept in the index (shared by every process on the spool)."""
        with self._index.tx() as db:
            add_to_counters(db, {name: increment})

    def counter(self, name: str) -> int:
        with self._index.lock:
            row = self._index.db.execute(
                "SELECT value FROM meta WHERE key = ?", (f"counter:{name}",)
            ).fetchone()
        return int(row[0]) if row else 0

    def totals(self) -> dict[str, int]:
        """Counts and bytes since the spool was created (monotonic), for metrics and the
        heartbeat."""
        with self._index.lock:
            received, received_bytes, forwarded, forwarded_bytes = self._index.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(state = 'sent'), 0), "
                "COALESCE(SUM(sent_bytes), 0) FROM instances"
            ).fetchone()
            gone = read_counters(self._index.db)
        return {
            "received": int(received) + gone.get("gone_received", 0),
            "received_bytes": int(received_bytes) + gone.get("gone_received_bytes", 0),
            "forwarded": int(forwarded) + gone.get("gone_forwarded", 0),
            "forwarded_bytes": int(forwarded_bytes) + gone.get("gone_forwarded_bytes", 0),
            "refused": gone.get("refused", 0),
        }

    def study_totals(self, study_uid: str) -> tuple[int, int, int, float]:
        """(instances, received bytes, sent bytes, first received_at) of one study."""
        with self._index.lock:
            row = self._index.db.execute(
                """SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(sent_bytes), 0),
                          COALESCE(MIN(received_at), 0)
                   FROM instances WHERE study_instance_uid = ? AND state = 'sent'""",
                (study_uid,),
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2]), float(row[3])

    def stats(self) -> SpoolStats:
        db = self._index.db
        with self._index.lock:
            pending, pending_bytes = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM instances WHERE state = 'pending'"
            ).fetchone()
            sent = db.execute("SELECT COUNT(*) FROM instances WHERE state = 'sent'").fetchone()[0]
            failed = db.execute("SELECT COUNT(*) FROM instances WHERE state = 'parked'").fetchone()[
                0
            ]
            open_studies, parked_studies = db.execute(
                "SELECT COALESCE(SUM(state = 'open'), 0), COALESCE(SUM(state = 'parked'), 0) "
                "FROM studies"
            ).fetchone()
            last_sent = db.execute("SELECT MAX(sent_at) FROM instances").fetchone()[0]
            err = db.execute(
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
            parked_studies=parked_studies,
        )

    def parked(self, limit: int = 50) -> list[ParkedStudy]:
        """Parked studies with their reason, and studies holding parked instances (a study
        the hub completed with the instances it took), most recently parked first."""
        with self._index.lock:
            rows = self._index.db.execute(
                """SELECT s.study_instance_uid, s.state, s.error_code, s.last_error,
                          s.parked_at, s.not_before,
                          (SELECT COUNT(*) FROM instances i
                           WHERE i.study_instance_uid = s.study_instance_uid
                             AND i.state = 'parked'),
                          (SELECT i.error_code || char(10) || i.last_error || char(10)
                                  || i.parked_at || char(10) || i.not_before
                           FROM instances i
                           WHERE i.study_instance_uid = s.study_instance_uid
                             AND i.state = 'parked' ORDER BY i.parked_at DESC LIMIT 1)
                   FROM studies s
                   WHERE s.state = 'parked' OR EXISTS (
                       SELECT 1 FROM instances i
                       WHERE i.study_instance_uid = s.study_instance_uid AND i.state = 'parked')
                   ORDER BY COALESCE(s.parked_at, 0) DESC LIMIT ?""",
                (limit,),
            ).fetchall()
        parked: list[ParkedStudy] = []
        for uid, state, code, error, parked_at, not_before, instances, latest in rows:
            if state != "parked" and latest:
                i_code, i_error, i_parked_at, i_next = latest.split("\n", 3)
                code, error = i_code, f"{instances} instance(s) refused: {i_error}"
                parked_at, not_before = float(i_parked_at or 0), float(i_next or 0)
            parked.append(
                ParkedStudy(
                    study_instance_uid=uid,
                    code=code,
                    reason=error,
                    instances=int(instances),
                    parked_at=parked_at,
                    next_try_at=not_before or None,
                )
            )
        return parked

    def study_progress(self) -> list[dict[str, object]]:
        """Per-study progress for ``gateway status``."""
        with self._index.lock:
            rows = self._index.db.execute(
                """SELECT s.study_instance_uid, s.state, s.last_error, s.error_code,
                          SUM(i.state = 'sent'), COUNT(i.sop_instance_uid),
                          SUM(CASE WHEN i.state = 'pending' THEN i.size ELSE 0 END),
                          SUM(i.state = 'parked'), s.not_before
                   FROM studies s LEFT JOIN instances i
                        ON i.study_instance_uid = s.study_instance_uid
                   GROUP BY s.study_instance_uid ORDER BY s.last_received_at DESC LIMIT 50"""
            ).fetchall()
        now = time.time()
        return [
            {
                "study_instance_uid": r[0],
                "state": r[1],
                "last_error": r[2],
                "code": r[3],
                "sent": r[4] or 0,
                "total": r[5] or 0,
                "pending_bytes": r[6] or 0,
                "failed": r[7] or 0,
                "next_try_at": r[8] if r[8] and r[8] > now else None,
            }
            for r in rows
        ]
