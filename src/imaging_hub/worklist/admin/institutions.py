"""The institutions of the network by code, name and level (``GET /api/v1/institutions``).

Every signed-in user may read it (``account.self``): names and codes of hospitals and health
centres are no patient data, and every page of the browser app shows clinics by name.
"""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import Institution, InstitutionLevel

READ = "account.self"


@dataclass(frozen=True)
class InstitutionView:
    code: str
    name: str
    level: InstitutionLevel
    parent: str | None


def list_institutions(session: Session, caller: Caller) -> list[InstitutionView]:
    """Every institution, by code, with its parent's code."""
    caller.require(READ)
    rows = list(session.scalars(select(Institution).order_by(Institution.code)))
    codes = {inst.id: inst.code for inst in rows}
    return [
        InstitutionView(
            code=inst.code,
            name=inst.name,
            level=inst.level,
            parent=codes.get(inst.parent_id) if inst.parent_id is not None else None,
        )
        for inst in rows
    ]
