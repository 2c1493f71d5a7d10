"""Reading the audit trail: list, export (itself audited) and verify, for an authorised caller.

The HTTP routes (:mod:`.routes`) and ``imaging-hub admin audit`` only translate.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit

READ = "audit.read"


@dataclass(frozen=True)
class AuditPage:
    items: list[audit.AuditRow]
    limit: int
    offset: int


def list_events(session: Session, caller: Caller, f: audit.AuditFilter) -> AuditPage:
    """Audit events, newest first, filtered and paged."""
    caller.require(READ)
    return AuditPage(items=audit.list_events(session, f), limit=f.limit, offset=f.offset)


def export_events(session: Session, caller: Caller, f: audit.AuditFilter) -> Iterator[list[str]]:
    """Record the export (with its filters), commit, then the CSV rows (header first)."""
    caller.require(READ)
    detail = {
        k: v
        for k, v in {
            "user": f.username,
            "action": f.action,
            "study": f.study_uid,
            "since": f.since.isoformat() if f.since else None,
            "until": f.until.isoformat() if f.until else None,
        }.items()
        if v is not None
    }
    audit.record_for(session, caller, audit.AUDIT_EXPORTED, object_type="audit", detail=detail)
    session.commit()
    return audit.csv_rows(audit.iter_events(session, f))


def verify(session: Session, caller: Caller) -> audit.ChainReport:
    """Recompute the hash chain; AuditChainBroken names the first bad event."""
    caller.require(READ)
    return audit.verify_chain(session)
