"""Attribute extraction: the patient/study/series/instance facts both sides of the link need.

Reading is tolerant (modalities send odd data), but the identifying UIDs are strict: an instance
whose Study, Series or SOP Instance UID is missing or invalid is refused (PS3.5 9.1), because those
UIDs become object keys and database keys.
"""

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError
from pydicom.tag import Tag
from pydicom.valuerep import PersonName

from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import InvalidDicomError

# Character sets tried, in order, when a dataset declares none but carries non-ASCII bytes.
# Chinese machines often send GB18030 bytes without (0008,0005); UTF-8 is tried first because
# valid UTF-8 is very unlikely to be accidental.
FALLBACK_CHARSETS = ("ISO_IR 192", "GB18030")


#: Priorities, most urgent first; the spool and the hub order work by this rank.
PRIORITY_STAT = 0
PRIORITY_URGENT = 1
PRIORITY_ROUTINE = 2

# Values of Requested Procedure Priority (0040,1003) and Study Priority ID (0032,000C),
# PS3.3 C.4.11 / C.4.4, mapped to our three ranks.
_PRIORITY_VALUES = {"STAT": PRIORITY_STAT, "HIGH": PRIORITY_URGENT}


@dataclass(frozen=True, slots=True)
class InstanceIdentity:
    """The UIDs that place an instance (validated), without decoding any text."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What the hub records about one instance (values decoded to Python text)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    referring_physician_name: str
    institution_name: str
    modality: str
    body_part_examined: str
    series_number: int | None
    series_description: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    study_id: str = ""
    bits_allocated: int | None = None
    #: From the header (see :func:`requested_priority`): 0 STAT, 1 urgent, 2 routine.
    priority_rank: int = PRIORITY_ROUTINE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(ds: Dataset, keyword: str, limit: int = 256) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, PersonName):
        text = str(value)
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.strip().replace("\x00", "")[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _declares_charset(ds: Dataset) -> bool:
    return bool(ds.get("SpecificCharacterSet"))


ITEM_GROUP = 0xFFFE
UNDEFINED_LENGTH = 0xFFFFFFFF


def is_stray_item(ds: Dataset, tag: Any) -> bool:
    """Whether *tag* of *ds* is a stray item of defined length at the top level.

    Some ultrasound machines write the items of a sequence without the sequence's own
    header (fo-dicom issue 364: the items of Sequence of Ultrasound Regions right after
    Processing Function). The item has a length, so a reader steps over it and every element
    after it reads normally (pydicom, fo-dicom do). PS3.5 7.5 does not allow an item there,
    so its content cannot be attributed; it is skipped, and the file is kept as it is.
    Stray items of undefined length, whose end cannot be found reliably, are not.
    """
    if Tag(tag).group != ITEM_GROUP:
        return False
    raw = ds.get_item(tag, keep_deferred=True)
    return isinstance(raw, RawDataElement) and is_stray_raw(raw)


def is_stray_raw(raw: RawDataElement) -> bool:
    """:func:`is_stray_item` for a top-level element still raw."""
    return raw.tag >> 16 == ITEM_GROUP and raw.length != UNDEFINED_LENGTH


def read_dataset(data: bytes, *, stop_before_pixels: bool = True) -> Dataset:
    """Parse Part-10 bytes (or a bare dataset) tolerantly; raise InvalidDicomError if unreadable.

    Stray items of defined length (see :func:`is_stray_item`) are dropped from the dataset.
    """
    if len(data) < 8:
        raise InvalidDicomError("The data is too short to be a DICOM dataset.")
    try:
        with warnings.catch_warnings():
            # Tolerant reading of what modalities send: pydicom warns about odd but readable data.
            warnings.simplefilter("ignore")
            ds = dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)
            if len(ds) == 0 and not ds.file_meta:
                raise InvalidDicomError("The data does not contain any DICOM elements.")
            for tag in [t for t in ds.keys() if is_stray_item(ds, t)]:  # noqa: SIM118
                del ds[tag]
            # Touch every element so that parse errors surface here, not later.
            for _elem in ds:
                pass
    except InvalidDicomError:
        raise
    except (PydicomInvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise InvalidDicomError("The data is not a readable DICOM dataset.") from exc
    except Exception as exc:  # pydicom raises many kinds of errors on hostile bytes
        raise InvalidDicomError("The data is not a readable DICOM dataset.") from exc
    return ds


def _decode_names(ds: Dataset) -> None:
    """Decode text elements, guessing the character set when the dataset declares none."""
    if _declares_charset(ds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.decode()
        return
    raw = ds.get_item("PatientName")
    raw_bytes = getattr(raw, "value", None)
    if isinstance(raw_bytes, bytes):
        try:
            raw_bytes.decode("ascii")
        except UnicodeDecodeError:
            for charset in FALLBACK_CHARSETS:
                try:
                    raw_bytes.decode("utf-8" if charset == "ISO_IR 192" else "gb18030")
                except UnicodeDecodeError:
                    continue
                ds.SpecificCharacterSet = charset
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.decode()


def decode_text(ds: Dataset) -> None:
    """Decode the text elements of *ds* in place, guessing GB18030/UTF-8 when none is declared.

    Undecodable text is kept as pydicom's best effort, never fatal.
    """
    with contextlib.suppress(Exception):
        _decode_names(ds)


def _priority_values(ds: Dataset) -> list[str]:
    values = [ds.get("RequestedProcedurePriority"), ds.get("StudyPriorityID")]
    for item in ds.get("RequestAttributesSequence") or []:
        values.append(item.get("RequestedProcedurePriority"))
    return [str(v).strip().upper() for v in values if v]


def requested_priority(ds: Dataset) -> int:
    """The study's priority from its header: 0 STAT, 1 urgent, 2 routine.

    Read from Requested Procedure Priority (0040,1003), at the top level or in the Request
    Attributes Sequence (0040,0275) that modalities copy from the worklist, and from the
    retired Study Priority ID (0032,000C): ``STAT`` is STAT, ``HIGH`` is urgent, anything
    else (``ROUTINE``, ``MEDIUM``, ``LOW``, absent) is routine. The most urgent value wins.
    """
    try:
        ranks = [_PRIORITY_VALUES.get(v, PRIORITY_ROUTINE) for v in _priority_values(ds)]
    except Exception:  # a malformed optional attribute never refuses the instance
        return PRIORITY_ROUTINE
    return min(ranks, default=PRIORITY_ROUTINE)


def _meta(meta: Any, keyword: str) -> Any:
    return meta.get(keyword) if meta else None


def identify_instance(
    ds: Dataset, *, transfer_syntax_uid: str | None = None, sop_class_uid: str | None = None
) -> InstanceIdentity:
    """The validated identifying UIDs of *ds*; raise InvalidDicomError when one is bad.

    The transfer syntax, and the SOP class when *ds* lacks its own, come from its File Meta
    Information unless given (a data set received without one).
    """
    meta = getattr(ds, "file_meta", None)
    ts = _meta(meta, "TransferSyntaxUID") if transfer_syntax_uid is None else transfer_syntax_uid
    fallback = _meta(meta, "MediaStorageSOPClassUID") if sop_class_uid is None else sop_class_uid
    return InstanceIdentity(
        sop_class_uid=validate_uid(
            str(ds.get("SOPClassUID") or fallback or ""),
            name="SOPClassUID",
        ),
        sop_instance_uid=validate_uid(str(ds.get("SOPInstanceUID") or ""), name="SOPInstanceUID"),
        study_instance_uid=validate_uid(
            str(ds.get("StudyInstanceUID") or ""), name="StudyInstanceUID"
        ),
        series_instance_uid=validate_uid(
            str(ds.get("SeriesInstanceUID") or ""), name="SeriesInstanceUID"
        ),
        transfer_syntax_uid=str(ts or ""),
    )


def extract_instance_info(ds: Dataset) -> InstanceInfo:
    """Extract :class:`InstanceInfo`; raise InvalidDicomError when identifying UIDs are bad."""
    identity = identify_instance(ds)
    # Undecodable text is kept as pydicom's best effort, never fatal.
    with contextlib.suppress(Exception):
        _decode_names(ds)
    return InstanceInfo(
        sop_class_uid=identity.sop_class_uid,
        sop_instance_uid=identity.sop_instance_uid,
        study_instance_uid=identity.study_instance_uid,
        series_instance_uid=identity.series_instance_uid,
        transfer_syntax_uid=identity.transfer_syntax_uid,
        patient_id=_text(ds, "PatientID", 64),
        patient_name=_text(ds, "PatientName", 324),
        patient_birth_date=_text(ds, "PatientBirthDate", 8),
        patient_sex=_text(ds, "PatientSex", 16),
        accession_number=_text(ds, "AccessionNumber", 16),
        study_date=_text(ds, "StudyDate", 8),
        study_time=_text(ds, "StudyTime", 16),
        study_description=_text(ds, "StudyDescription", 64),
        referring_physician_name=_text(ds, "ReferringPhysicianName", 324),
        institution_name=_text(ds, "InstitutionName", 64),
        modality=_text(ds, "Modality", 16).upper(),
        body_part_examined=_text(ds, "BodyPartExamined", 16).upper(),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 64),
        instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        study_id=_text(ds, "StudyID", 16),
        bits_allocated=_int(ds, "BitsAllocated"),
        priority_rank=requested_priority(ds),
    )


def parse_instance(data: bytes) -> InstanceInfo:
    """Parse Part-10 bytes and extract :class:`InstanceInfo` (header only, pixels not read)."""
    return extract_instance_info(read_dataset(data, stop_before_pixels=True))
