"""Shared helpers for the worklist tests: a small five-level network and studies without DICOM.

Users get a placeholder password hash (no argon2 cost): these tests never log in with a password;
HTTP tests issue tokens with ``issue_token``.
"""

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.worklist.access.accounts import issue_access_token
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.models import (
    Eligibility,
    Institution,
    InstitutionLevel,
    Patient,
    Priority,
    Role,
    Series,
    Study,
    StudyEvent,
    StudyStatus,
    User,
)
from imaging_hub.worklist.db.session import make_engine, make_session_factory
from imaging_hub.worklist.studies.registration import PRIORITY_RANK, SlaPolicy

SLA = SlaPolicy()
_uids = itertools.count(1)

NETWORK: list[tuple[str, InstitutionLevel, str | None]] = [
    ("province", InstitutionLevel.province, None),
    ("city", InstitutionLevel.city, "province"),
    ("hub", InstitutionLevel.district, "city"),
    ("clinic-a", InstitutionLevel.township, "hub"),
    ("clinic-b", InstitutionLevel.township, "hub"),
    ("village-a1", InstitutionLevel.village, "clinic-a"),
]


def new_uid() -> str:
    return f"1.2.826.0.1.3680043.10.543.{next(_uids)}.{datetime.now(UTC).microsecond}"


def seed(session: Session) -> dict[str, Institution]:
    institutions: dict[str, Institution] = {}
    for code, level, parent in NETWORK:
        inst = Institution(
            code=code,
            name=f"{code} 医院",
            level=level,
            parent_id=institutions[parent].id if parent else None,
        )
        session.add(inst)
        session.flush()
        institutions[code] = inst
    add_user(session, "admin", Role.admin, institutions["hub"])
    add_user(session, "rad1", Role.radiologist, institutions["hub"], on_duty=True)
    add_user(session, "rad2", Role.radiologist, institutions["hub"], on_duty=True)
    add_user(session, "consult1", Role.consultant, institutions["province"])
    add_user(session, "consult-city", Role.consultant, institutions["city"])
    add_user(session, "staff-a", Role.clinic_staff, institutions["clinic-a"])
    session.commit()
    return institutions


def add_user(
    session: Session,
    username: str,
    role: Role,
    institution: Institution,
    *,
    on_duty: bool = False,
    modalities: list[str] | None = None,
    body_parts: list[str] | None = None,
    clinic_ids: list[int] | None = None,
) -> User:
    user = User(
        username=username,
        display_name=f"{username} 医生",
        password_hash="not-a-password-hash",
        role=role,
        institution_id=institution.id,
        on_duty=on_duty,
    )
    session.add(user)
    session.flush()
    if role == Role.radiologist:
        session.add(
            Eligibility(
                user_id=user.id,
                modalities=modalities or [],
                body_parts=body_parts or [],
                clinic_ids=clinic_ids or [],
            )
        )
    session.flush()
    return user


def user(session: Session, username: str) -> User:
    found = session.scalar(select(User).where(User.username == username))
    assert found is not None
    return found


def institution(session: Session, code: str) -> Institution:
    found = session.scalar(select(Institution).where(Institution.code == code))
    assert found is not None
    return found


def add_study(
    session: Session,
    *,
    clinic: str = "clinic-a",
    priority: Priority = Priority.routine,
    modalities: tuple[str, ...] = ("CR",),
    body_part: str = "CHEST",
    completed_at: datetime | None = None,
    status: StudyStatus = StudyStatus.unread,
    patient_name: str = "王^小东",
) -> Study:
    """An unread (complete) study with one series per modality, as registration leaves it."""
    completed_at = completed_at or datetime.now(UTC)
    inst = institution(session, clinic)
    patient = Patient(clinic_id=inst.id, patient_id=f"P{next(_uids)}", patient_name=patient_name)
    session.add(patient)
    session.flush()
    study = Study(
        study_instance_uid=new_uid(),
        clinic_id=inst.id,
        patient_pk=patient.id,
        modalities="\\".join(modalities),
        body_part_examined=body_part,
        status=status,
        priority=priority,
        priority_rank=PRIORITY_RANK[priority],
        received_at=completed_at - timedelta(minutes=1),
        completed_at=completed_at if status != StudyStatus.receiving else None,
        due_at=SLA.due(priority, completed_at) if status != StudyStatus.receiving else None,
        num_series=len(modalities),
        num_instances=len(modalities),
    )
    session.add(study)
    session.flush()
    for modality in modalities:
        session.add(
            Series(
                study_id=study.id,
                series_instance_uid=new_uid(),
                modality=modality,
                body_part_examined=body_part,
                num_instances=1,
            )
        )
    session.add(StudyEvent(study_id=study.id, kind="complete", at=completed_at))
    session.commit()
    return study


def snapshot(session: Session) -> list[tuple[object, ...]]:
    """Every study's assignment state and the number of events: to assert nothing changed."""
    session.expire_all()
    rows = session.execute(
        select(
            Study.study_instance_uid,
            Study.status,
            Study.assigned_to_id,
            Study.lease_expires_at,
            Study.priority,
            Study.due_at,
        ).order_by(Study.id)
    ).all()
    events = len(session.scalars(select(StudyEvent.id)).all())
    return [tuple(r) for r in rows] + [("events", events)]


def issue_token(sessions: sessionmaker[Session], username: str) -> str:
    with sessions() as session:
        token = issue_access_token(
            session, user=user(session, username), lifetime=timedelta(hours=1)
        )
        session.commit()
        return token


def migrated_sessions(url: str) -> sessionmaker[Session]:
    engine = make_engine(url)
    upgrade(engine)
    return make_session_factory(engine)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=BACKENDS)
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """A migrated, seeded database on SQLite or PostgreSQL (the worklist suite runs on both)."""
    factory = migrated_sessions(database_url(request.param, tmp_path, request))
    with factory() as session:
        seed(session)
    try:
        yield factory
    finally:
        bind = factory.kw["bind"]
        bind.dispose()


@pytest.fixture
def db(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session
