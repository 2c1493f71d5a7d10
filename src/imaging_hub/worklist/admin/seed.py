"""The demo network (ARCHITECTURE.md, external contract): institutions, users and gateways."""

import secrets
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.worklist.access.accounts import create_gateway, hash_password, rotate_gateway_token
from imaging_hub.worklist.db.models import (
    Eligibility,
    Gateway,
    Institution,
    InstitutionLevel,
    Role,
    User,
)

DEMO_INSTITUTIONS: list[tuple[str, str, InstitutionLevel, str | None]] = [
    ("province", "省人民医院 Provincial People's Hospital", InstitutionLevel.province, None),
    ("city", "市中心医院 City Central Hospital", InstitutionLevel.city, "province"),
    ("hub", "县人民医院影像中心 District Imaging Hub", InstitutionLevel.district, "city"),
    ("clinic-a", "A镇卫生院 Township Health Centre A", InstitutionLevel.township, "hub"),
    ("clinic-b", "B镇卫生院 Township Health Centre B", InstitutionLevel.township, "hub"),
]

DEMO_USERS: list[tuple[str, str, Role, str]] = [
    ("admin", "系统管理员 Administrator", Role.admin, "hub"),
    ("rad1", "李医生 Dr. Li", Role.radiologist, "hub"),
    ("rad2", "张医生 Dr. Zhang", Role.radiologist, "hub"),
    ("consult1", "王主任 Prof. Wang", Role.consultant, "province"),
    ("staff-a", "A镇技师 Technician A", Role.clinic_staff, "clinic-a"),
    ("staff-b", "B镇技师 Technician B", Role.clinic_staff, "clinic-b"),
]

DEMO_GATEWAYS: list[tuple[str, str, str]] = [
    ("gateway-clinic-a", "clinic-a", "CLINIC_A"),
    ("gateway-clinic-b", "clinic-b", "CLINIC_B"),
]


@dataclass
class DemoNetwork:
    passwords: dict[str, str] = field(default_factory=dict)
    gateway_tokens: dict[str, str] = field(default_factory=dict)  # clinic code -> token


def random_password() -> str:
    return secrets.token_urlsafe(12)


def create_demo_network(session: Session, *, password: str | None = None) -> DemoNetwork:
    """Create (or reset) the demo network; returns the plain passwords and gateway tokens.

    Running it again resets the demo users' passwords and issues new gateway tokens, so a demo
    restarted on the same data directory prints logins that work.
    """
    result = DemoNetwork()
    institutions: dict[str, Institution] = {}
    for code, name, level, parent in DEMO_INSTITUTIONS:
        inst = session.scalar(select(Institution).where(Institution.code == code))
        if inst is None:
            inst = Institution(
                code=code,
                name=name,
                level=level,
                parent_id=institutions[parent].id if parent else None,
            )
            session.add(inst)
            session.flush()
        institutions[code] = inst
    for username, display, role, inst_code in DEMO_USERS:
        plain = password or random_password()
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = User(
                username=username,
                display_name=display,
                role=role,
                institution_id=institutions[inst_code].id,
                password_hash=hash_password(plain),
                on_duty=role == Role.radiologist,
            )
            session.add(user)
            session.flush()
        else:
            user.password_hash = hash_password(plain)
            user.is_active = True
            user.failed_logins = 0
            user.locked_until = None
        if role == Role.radiologist and session.get(Eligibility, user.id) is None:
            session.add(Eligibility(user_id=user.id, modalities=[], body_parts=[], clinic_ids=[]))
        result.passwords[username] = plain
    for name, clinic_code, ae_title in DEMO_GATEWAYS:
        gateway = session.scalar(select(Gateway).where(Gateway.name == name))
        if gateway is None:
            issued = create_gateway(
                session, clinic=institutions[clinic_code], name=name, ae_title=ae_title
            )
            result.gateway_tokens[clinic_code] = issued.token
        else:
            gateway.revoked_at = None
            result.gateway_tokens[clinic_code] = rotate_gateway_token(session, gateway=gateway)
    session.commit()
    return result
