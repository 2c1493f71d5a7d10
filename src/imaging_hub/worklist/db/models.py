"""Database models (SQLAlchemy 2). Column names follow DICOM keywords in snake_case.

Schema changes go through Alembic migrations in ``worklist/migrations``; the migration test
checks that the models and the migrated schema agree.
"""

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("Naive datetimes are not stored; use datetime.now(UTC).")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class InstitutionLevel(enum.StrEnum):
    province = "province"
    city = "city"
    district = "district"
    township = "township"
    village = "village"


class Role(enum.StrEnum):
    admin = "admin"
    radiologist = "radiologist"
    consultant = "consultant"
    clinic_staff = "clinic_staff"


class StudyStatus(enum.StrEnum):
    receiving = "receiving"
    unread = "unread"
    in_progress = "in_progress"
    escalated = "escalated"
    signed = "signed"
    delivered = "delivered"
    acknowledged = "acknowledged"  # a clinic user recorded receipt of a critical result
    cancelled = "cancelled"


class Priority(enum.StrEnum):
    stat = "stat"
    urgent = "urgent"
    routine = "routine"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=32, validate_strings=True)


class Institution(Base):
    """A hospital or health centre at one level of the five-level chain."""

    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[InstitutionLevel] = mapped_column(_enum(InstitutionLevel, "institution_level"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped["Institution | None"] = relationship(remote_side="Institution.id")

    @property
    def is_clinic(self) -> bool:
        return self.level in (InstitutionLevel.township, InstitutionLevel.village)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    on_duty: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    password_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    institution: Mapped[Institution] = relationship()


class Eligibility(Base):
    """What a radiologist may read: empty lists mean 'all'."""

    __tablename__ = "eligibilities"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    body_parts: Mapped[list[str]] = mapped_column(JSON, default=list)
    clinic_ids: Mapped[list[int]] = mapped_column(JSON, default=list)


class AccessToken(Base):
    """Opaque bearer tokens; only the SHA-256 of the token is stored."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="access")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship()


class Gateway(Base):
    """A clinic gateway; its token is shown once and stored hashed."""

    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    ae_title: Mapped[str] = mapped_column(String(16), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    previous_token_hash: Mapped[str | None] = mapped_column(String(64))
    #: The previous token works until then (a rotation's grace; None: rotated before 0009,
    #: until the next rotation).
    previous_token_expires_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_seen_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    institution: Mapped[Institution] = relationship()


class Patient(Base):
    """A patient as known to one clinic (PatientID is only unique within its issuer)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("clinic_id", "patient_id", name="uq_patients_clinic_pid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_queue", "status", "priority_rank", "due_at"),
        Index("ix_studies_clinic_received", "clinic_id", "received_at"),
        # The open worklist: only open studies, in hand-out order (partial index, both
        # backends). Queries repeat "status IN (...)" so the planner may use it.
        Index(
            "ix_studies_open",
            "priority_rank",
            "due_at",
            "id",
            sqlite_where=text("status IN ('unread', 'in_progress', 'escalated')"),
            postgresql_where=text("status IN ('unread', 'in_progress', 'escalated')"),
        ),
        # The claim queue: unread studies in hand-out order (claimed ones leave it at once).
        Index(
            "ix_studies_unread",
            "priority_rank",
            "due_at",
            "id",
            sqlite_where=text("status = 'unread'"),
            postgresql_where=text("status = 'unread'"),
        ),
        # The whole worklist in priority order and in due order (listing without a filter).
        Index("ix_studies_priority_order", "priority_rank", "due_at", "id"),
        Index("ix_studies_due_order", "due_at", "priority_rank", "id"),
        Index("ix_studies_received_at", "received_at"),
        Index("ix_studies_signed_at", "signed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")  # (0020,0010), for QIDO-RS
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    modalities: Mapped[str] = mapped_column(String(64), default="")
    body_part_examined: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[StudyStatus] = mapped_column(
        _enum(StudyStatus, "study_status"), default=StudyStatus.receiving
    )
    priority: Mapped[Priority] = mapped_column(
        _enum(Priority, "priority"), default=Priority.routine
    )
    priority_rank: Mapped[int] = mapped_column(Integer, default=2)
    due_at: Mapped[datetime | None] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    claimed_at: Mapped[datetime | None] = mapped_column()
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    overdue_notified_at: Mapped[datetime | None] = mapped_column()
    signed_at: Mapped[datetime | None] = mapped_column()
    delivered_at: Mapped[datetime | None] = mapped_column()
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    clinic: Mapped[Institution] = relationship()
    patient: Mapped[Patient] = relationship()
    assigned_to: Mapped[User | None] = relationship()
    series: Mapped[list["Series"]] = relationship(back_populates="study", order_by="Series.id")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list["Instance"]] = relationship(
        back_populates="series", order_by="Instance.instance_number"
    )


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int | None] = mapped_column(Integer)
    bits_allocated: Mapped[int | None] = mapped_column(Integer)  # for QIDO-RS
    object_key: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class StudyEvent(Base):
    """The study's timeline: received, complete, claimed, released, escalated, opinion, ..."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    gateway_id: Mapped[int | None] = mapped_column(ForeignKey("gateways.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    actor: Mapped[User | None] = relationship()


class UidConflict(Base):
    """A StudyInstanceUID (or SOP Instance UID) that arrived from a second clinic: never merged."""

    __tablename__ = "uid_conflicts"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    existing_clinic_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    incoming_clinic_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEvent(Base):
    """Append-only audit trail with a hash chain; written only by ``worklist.audit.record``."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    gateway_id: Mapped[int | None] = mapped_column(ForeignKey("gateways.id"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(128), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")


class AuditHead(Base):
    """The single row (id 1) naming the newest audit event; its row lock serializes appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class Shift(Base):
    """An on-duty shift of a radiologist: on duty while ``starts_at <= now < ends_at``.

    A radiologist is on duty if the ``users.on_duty`` flag is set (manual duty, the demo) or a
    shift covers the current instant.
    """

    __tablename__ = "shifts"
    __table_args__ = (Index("ix_shifts_user_window", "user_id", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column()
    ends_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrderStatus(enum.StrEnum):
    scheduled = "scheduled"  # registered, nothing performed yet (portal: "ordered")
    in_progress = "in_progress"  # MPPS IN PROGRESS at the modality (portal: "scanning")
    completed = "completed"  # MPPS COMPLETED or "exam done" clicked by clinic staff
    discontinued = "discontinued"  # MPPS DISCONTINUED (with the modality's reason)
    cancelled = "cancelled"  # cancelled by clinic staff (with a reason)


class Order(Base):
    """A clinic's exam order, shaped for the Modality Worklist (PS3.4 K.6.1.2)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("clinic_id", "accession_number", name="uq_orders_clinic_accession"),
        Index("ix_orders_clinic_scheduled", "clinic_id", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinic_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    accession_number: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str] = mapped_column(String(64))
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_description: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16))
    body_part_examined: Mapped[str] = mapped_column(String(16), default="")
    scheduled_station_ae_title: Mapped[str] = mapped_column(String(16), default="")
    scheduled_at: Mapped[datetime] = mapped_column()
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    priority: Mapped[Priority] = mapped_column(
        _enum(Priority, "order_priority"), default=Priority.routine
    )
    status: Mapped[OrderStatus] = mapped_column(
        _enum(OrderStatus, "order_status"), default=OrderStatus.scheduled
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The exam type of the catalogue (``orders/catalogue``) and the images it normally makes
    #: (0: unknown, e.g. a CT whose slice count varies).
    exam_type: Mapped[str] = mapped_column(String(32), default="")
    expected_images: Mapped[int] = mapped_column(Integer, default=0)
    #: The clinical question: Reason for the Requested Procedure (0040,1002), LO.
    reason_for_procedure: Mapped[str] = mapped_column(String(64), default="")
    #: The Modality Performed Procedure Step the gateway saw for this order, if any.
    mpps_uid: Mapped[str] = mapped_column(String(64), default="")
    mpps_status: Mapped[str] = mapped_column(String(16), default="")
    #: Why the step was discontinued (MPPS) or the order cancelled (clinic staff).
    status_reason: Mapped[str] = mapped_column(String(200), default="")
    #: "Exam done" clicked in the portal (machines without MPPS).
    done_at: Mapped[datetime | None] = mapped_column()
    done_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    #: Bumped on every change; the gateways' order feed is ordered by it.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)


class ReportStatus(enum.StrEnum):
    draft = "draft"
    signed = "signed"


class ReportKind(enum.StrEnum):
    report = "report"
    addendum = "addendum"


class Report(Base):
    """A report or an addendum (with its predecessor); a signed one never changes.

    A draft belongs to its author; signing fills in the signed PDF (``object_key``, its
    ``sha256``), the signer's certificate serial and the two DICOM objects stored into the study
    (Encapsulated PDF and TID 2000 SR). A critical result stays open until a clinic user
    acknowledges it (``acknowledged_*``); ``critical_overdue_at`` marks the one reminder sent
    when it was not acknowledged in time.
    """

    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_study_status", "study_id", "status"),
        Index("ix_reports_open_critical", "critical", "acknowledged_at", "signed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    kind: Mapped[ReportKind] = mapped_column(
        _enum(ReportKind, "report_kind"), default=ReportKind.report
    )
    status: Mapped[ReportStatus] = mapped_column(
        _enum(ReportStatus, "report_status"), default=ReportStatus.draft
    )
    predecessor_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    template: Mapped[str] = mapped_column(String(64), default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    critical_category: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    signed_at: Mapped[datetime | None] = mapped_column()
    #: The signed PDF in the object store (``storage.report_key``) and its SHA-256.
    object_key: Mapped[str] = mapped_column(String(300), default="")
    sha256: Mapped[str] = mapped_column(String(64), default="")
    signer_certificate_serial: Mapped[str] = mapped_column(String(64), default="")
    signer_name: Mapped[str] = mapped_column(String(200), default="")
    pdf_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledgement_method: Mapped[str] = mapped_column(String(32), default="")
    acknowledgement_read_back: Mapped[str] = mapped_column(Text, default="")
    critical_overdue_at: Mapped[datetime | None] = mapped_column()
    #: The key image the radiologist marked (series, instance, frame, window shown), printed in
    #: the signed PDF; ``None`` without one.
    key_image: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: When the clinic's gateway confirmed it holds the signed PDF (set once: "delivered").
    delivered_at: Mapped[datetime | None] = mapped_column()
    delivered_gateway_id: Mapped[int | None] = mapped_column(ForeignKey("gateways.id"))
    #: Where the acknowledgement was recorded: "portal" (hub) or "gateway" (the clinic's LAN
    #: page, synced when the WAN was back).
    acknowledged_via: Mapped[str] = mapped_column(String(16), default="")

    study: Mapped[Study] = relationship()
    author: Mapped[User] = relationship(foreign_keys=[author_id])
    acknowledged_by: Mapped[User | None] = relationship(foreign_keys=[acknowledged_by_id])


class ReportTemplate(Base):
    """A report template imported by an administrator (the built-in ones are package data)."""

    __tablename__ = "report_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SigningCredential(Base):
    """A radiologist's signing certificate and private key, the key encrypted with the user's
    own password (PKCS#8). The newest one without ``revoked_at`` is the one in use."""

    __tablename__ = "signing_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_key_pem: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()
    revoke_reason: Mapped[str] = mapped_column(String(64), default="")


class ConsultationStatus(enum.StrEnum):
    open = "open"
    answered = "answered"
    withdrawn = "withdrawn"
    closed = "closed"
    forwarded = "forwarded"  # passed further up the chain by a consultant (a new one is open)


class Consultation(Base):
    """An escalation: a hub radiologist asks a city or provincial institution a question."""

    __tablename__ = "consultations"
    __table_args__ = (Index("ix_consultations_to_status", "to_institution_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    to_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    question: Mapped[str] = mapped_column(Text)
    status: Mapped[ConsultationStatus] = mapped_column(
        _enum(ConsultationStatus, "consultation_status"), default=ConsultationStatus.open
    )
    opinion: Mapped[str] = mapped_column(Text, default="")
    consultant_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()

    study: Mapped[Study] = relationship()
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id])
    consultant: Mapped[User | None] = relationship(foreign_keys=[consultant_id])
    to_institution: Mapped[Institution] = relationship()


class Notification(Base):
    """A message pushed to one user (e.g. an overdue STAT to every on-duty radiologist)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_read", "user_id", "read_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column()
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    study: Mapped[Study | None] = relationship()
