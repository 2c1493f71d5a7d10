"""Modality Performed Procedure Step (PS3.4 Annex F.7): what the gateway reads of an N-CREATE
or N-SET data set, the checks the SCP makes, and the status codes it answers.

N-CREATE (F.7.2.1): the step starts IN PROGRESS; the Type 1 attributes of Table F.7.2-1 must
be present with a value (absent: 0x0120 Missing Attribute; empty: 0x0121 Missing Attribute
Value), and every value the gateway uses must be valid (0x0106 Invalid Attribute Value: a status
other than IN PROGRESS, a malformed UID, date or time). N-SET (F.7.2.2): attribute updates while
IN PROGRESS, or the final state COMPLETED / DISCONTINUED; a COMPLETED step needs its end date and
time and at least one Performed Series Sequence item (the final-state requirements of Table
F.7.2-2). A step already COMPLETED or DISCONTINUED may no longer be updated: 0x0110 Processing
Failure with Error ID 0xA710 (F.7.2.2.4; pynetdicom's PROCEDURE_STEP_STATUS). Nothing here knows
about storage: :mod:`imaging_hub.dicom_gateway.mpps` keeps the steps.
"""

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom import Dataset

from imaging_hub.dicom.uids import is_valid_uid

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"

IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"
STATES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL_STATES = (COMPLETED, DISCONTINUED)

# Status codes of N-CREATE and N-SET (PS3.4 F.7.2, PS3.7 Annex C).
SUCCESS = 0x0000
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
#: Error ID (0000,0903) of a 0x0110 failure: "Performed Procedure Step Object may no longer be
#: updated" (PS3.4 F.7.2.2.4).
ERROR_ID_MAY_NO_LONGER_BE_UPDATED = 0xA710

#: Referenced instances one step may list (a CT may make a few thousand; this bounds a hostile one).
MAX_REFERENCED_INSTANCES = 100_000

#: The Type 1 attributes of an N-CREATE (Table F.7.2-1), besides the Scheduled Step Attributes
#: Sequence and its Study Instance UID.
CREATE_REQUIRED = (
    "PerformedProcedureStepID",
    "PerformedStationAETitle",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepStatus",
    "Modality",
)


class MppsRefused(Exception):
    """The request is refused with *status* (and an Error Comment, and an Error ID)."""

    def __init__(self, status: int, comment: str, error_id: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]  # Error Comment is LO
        self.error_id = error_id


@dataclass(frozen=True)
class ReferencedInstance:
    """One instance of the Performed Series Sequence (image or non-image)."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class StepAttributes:
    """What one N-CREATE or N-SET says about the step; None: not in the data set."""

    status: str | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    step_id: str | None = None
    description: str | None = None
    performed_at: str | None = None  # ISO 8601, the gateway's zone (the modality's clock)
    ended_at: str | None = None
    reason: str | None = None
    referenced: tuple[ReferencedInstance, ...] | None = None
    series: int | None = None  # items of the Performed Series Sequence


def _text(value: Any, limit: int = 64) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")[:limit]


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception as exc:  # a value pydicom cannot decode
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, f"{keyword} cannot be read") from exc


def _present(ds: Dataset, keyword: str) -> bool:
    try:
        return keyword in ds
    except Exception:
        return False


def _required(ds: Dataset, keyword: str) -> Any:
    """A Type 1 attribute: present (else 0x0120) and not empty (else 0x0121)."""
    if not _present(ds, keyword):
        raise MppsRefused(MISSING_ATTRIBUTE, f"{keyword} is missing")
    value = _get(ds, keyword)
    if value is None or value == "" or (isinstance(value, list) and not value):
        raise MppsRefused(MISSING_ATTRIBUTE_VALUE, f"{keyword} has no value")
    return value


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    value = _get(ds, keyword)
    if value is None:
        return []
    try:
        items = list(value)
    except TypeError as exc:
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, f"{keyword} is not a sequence") from exc
    if not all(isinstance(item, Dataset) for item in items):
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, f"{keyword} is not a sequence")
    return items


def _uid(value: Any, keyword: str) -> str:
    uid = _text(value)
    if not is_valid_uid(uid):
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, f"{keyword} is not a valid UID")
    return uid


def _status(value: Any) -> str:
    status = _text(value, 16)
    if status not in STATES:
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, "Unknown Performed Procedure Step Status")
    return status


def _date_time(ds: Dataset, date_keyword: str, time_keyword: str) -> str | None:
    """The ISO time of a DA and TM pair; None when both are absent or empty (Type 2)."""
    date = _text(_get(ds, date_keyword), 8)
    clock = _text(_get(ds, time_keyword), 16)
    if not date and not clock:
        return None
    if not date:
        raise MppsRefused(MISSING_ATTRIBUTE_VALUE, f"{date_keyword} has no value")
    try:
        day = datetime.strptime(date, "%Y%m%d")
        digits = clock.split(".")[0].replace(":", "")
        if not digits.isdigit() or len(digits) not in (0, 2, 4, 6):
            raise ValueError(clock)
        parts = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)] + [0, 0, 0]
        at = day.replace(hour=parts[0], minute=parts[1], second=parts[2])
    except ValueError as exc:
        raise MppsRefused(
            INVALID_ATTRIBUTE_VALUE, f"{date_keyword}/{time_keyword} invalid"
        ) from exc
    return at.astimezone().isoformat()


REFERENCE_SEQUENCES = ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")


def _referenced(ds: Dataset) -> Iterator[ReferencedInstance]:
    for series in _items(ds, "PerformedSeriesSequence"):
        series_uid = _uid(_required(series, "SeriesInstanceUID"), "SeriesInstanceUID")
        for keyword in (
            "ReferencedImageSequence",
            "ReferencedNonImageCompositeSOPInstanceSequence",
        ):
            for item in _items(series, keyword):
                yield ReferencedInstance(
                    sop_class_uid=_uid(
                        _required(item, "ReferencedSOPClassUID"), "ReferencedSOPClassUID"
                    ),
                    sop_instance_uid=_uid(
                        _required(item, "ReferencedSOPInstanceUID"), "ReferencedSOPInstanceUID"
                    ),
                    series_instance_uid=series_uid,
                )


def _referenced_tuple(ds: Dataset) -> tuple[ReferencedInstance, ...] | None:
    if not _present(ds, "PerformedSeriesSequence"):
        return None
    found: dict[str, ReferencedInstance] = {}
    for instance in _referenced(ds):
        found.setdefault(instance.sop_instance_uid, instance)
        if len(found) > MAX_REFERENCED_INSTANCES:
            raise MppsRefused(INVALID_ATTRIBUTE_VALUE, "Too many referenced instances")
    return tuple(found.values())


def _series_count(ds: Dataset) -> int | None:
    if not _present(ds, "PerformedSeriesSequence"):
        return None
    return len(_items(ds, "PerformedSeriesSequence"))


def _reason(ds: Dataset) -> str | None:
    codes = _items(ds, "PerformedProcedureStepDiscontinuationReasonCodeSequence")
    for code in codes:
        meaning = _text(_get(code, "CodeMeaning"), 64) or _text(_get(code, "CodeValue"), 16)
        if meaning:
            return meaning
    if _present(ds, "CommentsOnThePerformedProcedureStep"):
        return _text(_get(ds, "CommentsOnThePerformedProcedureStep"), 256)
    return "" if codes else None


def _optional_text(ds: Dataset, keyword: str, limit: int = 64) -> str | None:
    return _text(_get(ds, keyword), limit) if _present(ds, keyword) else None


def parse_create(ds: Dataset) -> StepAttributes:
    """The attributes of an N-CREATE's Attribute List; MppsRefused when it breaks F.7.2.1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an odd value is refused below, not warned about
        return _parse_create(ds)


def _parse_create(ds: Dataset) -> StepAttributes:
    steps = _items(ds, "ScheduledStepAttributesSequence")
    if not _present(ds, "ScheduledStepAttributesSequence"):
        raise MppsRefused(MISSING_ATTRIBUTE, "ScheduledStepAttributesSequence is missing")
    if not steps:
        raise MppsRefused(MISSING_ATTRIBUTE_VALUE, "ScheduledStepAttributesSequence is empty")
    study_uids = {_uid(_required(step, "StudyInstanceUID"), "StudyInstanceUID") for step in steps}
    if len(study_uids) > 1:
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, "Scheduled steps of several studies")
    for keyword in CREATE_REQUIRED:
        _required(ds, keyword)
    status = _status(_get(ds, "PerformedProcedureStepStatus"))
    if status != IN_PROGRESS:
        raise MppsRefused(INVALID_ATTRIBUTE_VALUE, "A new step must be IN PROGRESS")
    accession = next(
        (_text(_get(s, "AccessionNumber"), 16) for s in steps if "AccessionNumber" in s), ""
    )
    performed_at = _date_time(
        ds, "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"
    )
    return StepAttributes(
        status=status,
        study_instance_uid=study_uids.pop(),
        accession_number=accession,
        modality=_text(_get(ds, "Modality"), 16),
        step_id=_text(_get(ds, "PerformedProcedureStepID"), 16),
        description=_optional_text(ds, "PerformedProcedureStepDescription") or "",
        performed_at=performed_at,
        ended_at=_date_time(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"),
        reason=_reason(ds),
        referenced=_referenced_tuple(ds) or (),
        series=_series_count(ds) or 0,
    )


def parse_set(ds: Dataset) -> StepAttributes:
    """The changes of an N-SET's Modification List (None: not changed); MppsRefused when a
    value is invalid. Whether the change is allowed is :func:`check_transition`'s business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parse_set(ds)


def _parse_set(ds: Dataset) -> StepAttributes:
    status = None
    if _present(ds, "PerformedProcedureStepStatus"):
        status = _status(_required(ds, "PerformedProcedureStepStatus"))
    ended_at = None
    if _present(ds, "PerformedProcedureStepEndDate") or _present(
        ds, "PerformedProcedureStepEndTime"
    ):
        ended_at = _date_time(ds, "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
        ended_at = ended_at or ""
    return StepAttributes(
        status=status,
        description=_optional_text(ds, "PerformedProcedureStepDescription"),
        ended_at=ended_at,
        reason=_reason(ds),
        referenced=_referenced_tuple(ds),
        series=_series_count(ds),
    )


def check_transition(current: str, changes: StepAttributes, *, ended_at: str, series: int) -> str:
    """The step's new state after *changes*, or MppsRefused. *ended_at* and *series* are the
    step's end time and number of performed series once the changes are applied."""
    if current in FINAL_STATES:
        raise MppsRefused(
            PROCESSING_FAILURE,
            "Performed Procedure Step Object may no longer be updated",
            ERROR_ID_MAY_NO_LONGER_BE_UPDATED,
        )
    new = changes.status or current
    if new == COMPLETED:
        if not ended_at:
            raise MppsRefused(MISSING_ATTRIBUTE_VALUE, "A COMPLETED step needs its end date/time")
        if series == 0:
            raise MppsRefused(MISSING_ATTRIBUTE, "PerformedSeriesSequence has no item")
    return new
