"""Database side of DICOMweb: QIDO-RS searches and the instance lists WADO-RS streams.

Every query goes through the policy's ``study_scope``, so a clinic's token never finds (or
can tell apart from "unknown") another clinic's UIDs. Answers are keyword -> value mappings that
:func:`imaging_hub.dicom.dicomjson.attributes_to_json` turns into DICOM JSON.
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Executable, Select, and_, bindparam, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from imaging_hub.dicom.qido import (
    DateRange,
    Number,
    QidoQuery,
    Text,
    UidList,
    ValueList,
    like_pattern,
)
from imaging_hub.errors import NotFound
from imaging_hub.worklist.access.policy import ScopeKey, scope_condition, scope_key, study_scope
from imaging_hub.worklist.db.models import Instance, Patient, Series, Study, User

ESCAPE = "!"


def _text(column: InstrumentedAttribute[str], match: Text) -> ColumnElement[bool]:
    pattern = like_pattern(match.value, escape=ESCAPE)
    return column.ilike(pattern, escape=ESCAPE)


def _person_name(column: InstrumentedAttribute[str], match: Text) -> ColumnElement[bool]:
    """PN matching on the whole name or on its ideographic / phonetic group (PS3.5 6.2)."""
    pattern = like_pattern(match.value, escape=ESCAPE)
    conditions = [column.ilike(pattern, escape=ESCAPE)]
    if "=" not in match.value:
        conditions.append(column.ilike(pattern + "=%", escape=ESCAPE))
        conditions.append(column.ilike("%=" + pattern, escape=ESCAPE))
        conditions.append(column.ilike("%=" + pattern + "=%", escape=ESCAPE))
    return or_(*conditions)


def _multi_value(column: InstrumentedAttribute[str], codes: Sequence[str]) -> ColumnElement[bool]:
    """Any of *codes* among the backslash-separated values of *column*."""
    conditions: list[ColumnElement[bool]] = []
    for code in codes:
        value = code.replace("_", ESCAPE + "_")
        conditions += [
            column == code,
            column.like(value + "\\%", escape=ESCAPE),
            column.like("%\\" + value, escape=ESCAPE),
            column.like("%\\" + value + "\\%", escape=ESCAPE),
        ]
    return or_(*conditions)


_TEXT_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "PatientID": Patient.patient_id,
    "AccessionNumber": Study.accession_number,
    "StudyDescription": Study.study_description,
    "StudyID": Study.study_id,
    "SeriesDescription": Series.series_description,
}
_PN_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "PatientName": Patient.patient_name,
    "ReferringPhysicianName": Study.referring_physician_name,
}
_UID_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "StudyInstanceUID": Study.study_instance_uid,
    "SeriesInstanceUID": Series.series_instance_uid,
    "SOPInstanceUID": Instance.sop_instance_uid,
    "SOPClassUID": Instance.sop_class_uid,
}
_NUMBER_COLUMNS: dict[str, InstrumentedAttribute[int | None]] = {
    "SeriesNumber": Series.series_number,
    "InstanceNumber": Instance.instance_number,
}


def _conditions(query: QidoQuery) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for keyword, match in query.matches.items():
        if isinstance(match, Text):
            if keyword in _PN_COLUMNS:
                out.append(_person_name(_PN_COLUMNS[keyword], match))
            else:
                out.append(_text(_TEXT_COLUMNS[keyword], match))
        elif isinstance(match, UidList):
            out.append(_UID_COLUMNS[keyword].in_(match.values))
        elif isinstance(match, DateRange):
            parts = [Study.study_date != ""]
            if match.start:
                parts.append(Study.study_date >= match.start)
            if match.end:
                parts.append(Study.study_date <= match.end)
            out.append(and_(*parts))
        elif isinstance(match, ValueList):
            if keyword == "ModalitiesInStudy":
                out.append(_multi_value(Study.modalities, match.values))
            elif keyword == "Modality":
                out.append(Series.modality.in_(match.values))
            else:
                out.append(Series.body_part_examined.in_(match.values))
        elif isinstance(match, Number):
            out.append(_NUMBER_COLUMNS[keyword] == match.value)
    return out


def _study_values(study: Study, patient: Patient) -> dict[str, Any]:
    return {
        "StudyDate": study.study_date,
        "StudyTime": study.study_time,
        "AccessionNumber": study.accession_number,
        "ModalitiesInStudy": study.modalities,
        "ReferringPhysicianName": study.referring_physician_name,
        "StudyDescription": study.study_description,
        "PatientName": patient.patient_name,
        "PatientID": patient.patient_id,
        "PatientBirthDate": patient.patient_birth_date,
        "PatientSex": patient.patient_sex,
        "StudyInstanceUID": study.study_instance_uid,
        "StudyID": study.study_id,
        "NumberOfStudyRelatedSeries": study.num_series,
        "NumberOfStudyRelatedInstances": study.num_instances,
    }


def _series_values(series: Series) -> dict[str, Any]:
    return {
        "Modality": series.modality,
        "SeriesDescription": series.series_description,
        "SeriesNumber": series.series_number,
        "SeriesInstanceUID": series.series_instance_uid,
        "BodyPartExamined": series.body_part_examined,
        "NumberOfSeriesRelatedInstances": series.num_instances,
    }


def _instance_values(instance: Instance) -> dict[str, Any]:
    return {
        "SOPClassUID": instance.sop_class_uid,
        "SOPInstanceUID": instance.sop_instance_uid,
        "InstanceNumber": instance.instance_number,
        "Rows": instance.rows,
        "Columns": instance.columns,
        "BitsAllocated": instance.bits_allocated,
        "NumberOfFrames": instance.number_of_frames,
        "AvailableTransferSyntaxUID": instance.transfer_syntax_uid,
    }


def _base(session: Session, user: User, *columns: Any) -> Select[Any]:
    return (
        select(*columns)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(study_scope(session, user))
    )


def _require_study(session: Session, user: User, study_uid: str) -> Study:
    study = session.scalar(
        select(Study).where(Study.study_instance_uid == study_uid, study_scope(session, user))
    )
    if study is None:
        raise NotFound("No study with this StudyInstanceUID is visible to you.")
    return study


def _require_series(session: Session, user: User, study_uid: str, series_uid: str) -> None:
    found = session.scalar(
        select(Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(
            Study.study_instance_uid == study_uid,
            Series.series_instance_uid == series_uid,
            study_scope(session, user),
        )
    )
    if found is None:
        raise NotFound("No series with these UIDs is visible to you.")


def search_studies(session: Session, *, user: User, query: QidoQuery) -> list[dict[str, Any]]:
    """QIDO-RS Search for Studies (PS3.18 10.6.1)."""
    stmt = _base(session, user, Study, Patient).where(*_conditions(query))
    stmt = stmt.order_by(Study.study_date.desc(), Study.id).limit(query.limit).offset(query.offset)
    return [_study_values(study, patient) for study, patient in session.execute(stmt).all()]


def search_series(
    session: Session, *, user: User, query: QidoQuery, study_uid: str | None = None
) -> list[dict[str, Any]]:
    """QIDO-RS Search for Series, of all studies or of one (PS3.18 10.6.1)."""
    if study_uid is not None:
        _require_study(session, user, study_uid)
    stmt = (
        _base(session, user, Series, Study, Patient)
        .join(Series, Series.study_id == Study.id)
        .where(*_conditions(query))
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    stmt = stmt.order_by(Study.id, Series.series_number, Series.id)
    stmt = stmt.limit(query.limit).offset(query.offset)
    out = []
    for series, study, patient in session.execute(stmt).all():
        values = _series_values(series)
        values["StudyInstanceUID"] = study.study_instance_uid
        if study_uid is None:
            values.update(_study_values(study, patient))
        out.append(values)
    return out


@dataclass(frozen=True)
class InstanceRef:
    """Where one instance is stored and what it is (for WADO-RS and QIDO-RS includefield)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int
    number_of_frames: int | None
    rows: int | None
    sha256: str = ""  # of the stored object: names its version (frame layout cache keys)


def search_instances(
    session: Session,
    *,
    user: User,
    query: QidoQuery,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[tuple[dict[str, Any], InstanceRef]]:
    """QIDO-RS Search for Instances (PS3.18 10.6.1), with where each instance is stored."""
    if study_uid is not None and series_uid is not None:
        _require_series(session, user, study_uid, series_uid)
    elif study_uid is not None:
        _require_study(session, user, study_uid)
    stmt = (
        _base(session, user, Instance, Series, Study, Patient)
        .join(Series, Series.study_id == Study.id)
        .join(Instance, Instance.series_id == Series.id)
        .where(*_conditions(query))
    )
    if study_uid is not None:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    stmt = stmt.order_by(Study.id, Series.series_number, Series.id, Instance.instance_number)
    stmt = stmt.order_by(Instance.id).limit(query.limit).offset(query.offset)
    out = []
    for instance, series, study, patient in session.execute(stmt).all():
        values = _instance_values(instance)
        values["StudyInstanceUID"] = study.study_instance_uid
        values["SeriesInstanceUID"] = series.series_instance_uid
        if series_uid is None:
            values.update(_series_values(series))
        if study_uid is None:
            values.update(_study_values(study, patient))
        out.append((values, _ref(instance, series, study)))
    return out


def _ref(instance: Instance, series: Series, study: Study) -> InstanceRef:
    return InstanceRef(
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        object_key=instance.object_key,
        size=instance.size,
        number_of_frames=instance.number_of_frames,
        rows=instance.rows,
        sha256=instance.sha256,
    )


_INSTANCE_REFS = (
    select(
        Study.study_instance_uid,
        Series.series_instance_uid,
        Instance.sop_instance_uid,
        Instance.sop_class_uid,
        Instance.transfer_syntax_uid,
        Instance.object_key,
        Instance.size,
        Instance.number_of_frames,
        Instance.rows,
        Instance.sha256,
    )
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Series.study_id == Study.id)
)


@functools.lru_cache(maxsize=4096)
def _instance_refs_statement(scope: ScopeKey, *, by_series: bool, by_sop: bool) -> Executable:
    """The find_instances statement for a scope and the UIDs given, built once: the UIDs are
    bound parameters, the scope condition is one object per key (policy.scope_condition)."""
    stmt = _INSTANCE_REFS.where(
        Study.study_instance_uid == bindparam("study_uid"), scope_condition(scope)
    )
    if by_series:
        stmt = stmt.where(Series.series_instance_uid == bindparam("series_uid"))
    if by_sop:
        stmt = stmt.where(Instance.sop_instance_uid == bindparam("sop_uid"))
    return stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def find_instances(
    session: Session,
    *,
    user: User,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[InstanceRef]:
    """The instances of a study, series or one instance in the caller's scope, in order.

    Raises NotFound when nothing matches, whether it does not exist or is out of scope.
    """
    # Plain columns, not ORM entities, run through Core on the session's connection: this
    # runs before every retrieve, frame and render, and is one statement with the scope, built
    # once per scope (building and keying it cost more CPU than running it on SQLite).
    stmt = _instance_refs_statement(
        scope_key(user), by_series=series_uid is not None, by_sop=sop_uid is not None
    )
    params = {"study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid}
    bound = {name: value for name, value in params.items() if value is not None}
    rows: list[tuple[Any, ...]] = [tuple(row) for row in session.connection().execute(stmt, bound)]
    refs = [InstanceRef(*row) for row in rows]
    if not refs:
        what = "instance" if sop_uid else "series" if series_uid else "study"
        raise NotFound(f"No {what} with these UIDs is visible to you.")
    return refs
