"""QIDO-RS query parameters (PS3.18 8.3.4) and DICOM attribute matching (PS3.4 C.2.2.2).

:func:`parse_query` turns the query string of a search into a :class:`QidoQuery` of typed
matches, so the database layer never sees raw parameters: single-value (case-insensitive)
and wildcard matching (``*`` and ``?``) on text, UID list matching (values separated by
``,`` or ``\\``), range matching on dates (``20240101-20241231``, ``-20241231``,
``20240101-``) and list matching on modalities. ``fuzzymatching`` is accepted and ignored.
Attributes are named by keyword or by tag (``00100010``).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from imaging_hub.dicom.dicomjson import keyword_of
from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import InvalidRequest, InvalidUidError

__all__ = [
    "DateRange",
    "Level",
    "Number",
    "QidoQuery",
    "Text",
    "UidList",
    "ValueList",
    "like_pattern",
    "parse_query",
]

Level = Literal["study", "series", "instance"]

#: Largest ``limit`` honoured; larger values are capped (PS3.18 8.3.4.4 lets the server limit).
MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000

_DATE = re.compile(r"^\d{8}$")
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")


@dataclass(frozen=True)
class Text:
    """Single value or wildcard matching of a string (case-insensitive)."""

    value: str

    @property
    def has_wildcard(self) -> bool:
        return "*" in self.value or "?" in self.value


@dataclass(frozen=True)
class UidList:
    values: tuple[str, ...]


@dataclass(frozen=True)
class ValueList:
    """Any of these code values (e.g. ModalitiesInStudy=CT,MR)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class DateRange:
    """Inclusive range of DA values (YYYYMMDD); ``None`` means open."""

    start: str | None
    end: str | None


@dataclass(frozen=True)
class Number:
    value: int


Match = Text | UidList | ValueList | DateRange | Number

_KINDS: dict[str, type] = {
    "PatientName": Text,
    "PatientID": Text,
    "AccessionNumber": Text,
    "StudyDescription": Text,
    "ReferringPhysicianName": Text,
    "StudyID": Text,
    "StudyDate": DateRange,
    "ModalitiesInStudy": ValueList,
    "StudyInstanceUID": UidList,
    "Modality": ValueList,
    "SeriesInstanceUID": UidList,
    "SeriesNumber": Number,
    "SeriesDescription": Text,
    "BodyPartExamined": ValueList,
    "SOPInstanceUID": UidList,
    "SOPClassUID": UidList,
    "InstanceNumber": Number,
}

#: Matching keys allowed at each level (a search at a lower level may match upper levels).
STUDY_KEYS = frozenset(
    {
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyDescription",
        "ReferringPhysicianName",
        "StudyID",
        "StudyDate",
        "ModalitiesInStudy",
        "StudyInstanceUID",
    }
)
SERIES_KEYS = frozenset(
    {"Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "BodyPartExamined"}
)
INSTANCE_KEYS = frozenset({"SOPInstanceUID", "SOPClassUID", "InstanceNumber"})
LEVEL_KEYS: dict[str, frozenset[str]] = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS | SERIES_KEYS,
    "instance": STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}


@dataclass(frozen=True)
class QidoQuery:
    matches: dict[str, Match] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    include_all: bool = False
    includefields: frozenset[str] = frozenset()


def like_pattern(value: str, *, escape: str = "!") -> str:
    """A SQL LIKE pattern for a DICOM wildcard value (``*`` any run, ``?`` one character)."""
    out = []
    for ch in value:
        if ch in (escape, "%", "_"):
            out.append(escape + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _split(value: str) -> list[str]:
    return [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]


def _date_range(keyword: str, value: str) -> DateRange:
    start, dash, end = value.partition("-")
    start, end = start.strip(), end.strip()
    for part in (start, end):
        if part and not _DATE.fullmatch(part):
            raise InvalidRequest(
                f"{keyword} must be a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not {value!r}."
            )
    if not dash:
        if not start:
            raise InvalidRequest(f"{keyword} must not be empty.")
        return DateRange(start, start)
    if not start and not end:
        raise InvalidRequest(f"{keyword} range must have a start or an end.")
    if start and end and start > end:
        raise InvalidRequest(f"{keyword} range starts after it ends.")
    return DateRange(start or None, end or None)


def _match(keyword: str, value: str) -> Match:
    kind = _KINDS[keyword]
    if kind is Text:
        if len(value) > 324:
            raise InvalidRequest(f"The value of {keyword} is too long.")
        return Text(value)
    if kind is DateRange:
        return _date_range(keyword, value)
    if kind is UidList:
        values = _split(value)
        if not values or len(values) > 1000:
            raise InvalidRequest(f"{keyword} must list between 1 and 1000 UIDs.")
        try:
            return UidList(tuple(validate_uid(v, name=keyword) for v in values))
        except InvalidUidError as exc:
            raise InvalidRequest(str(exc)) from exc
    if kind is ValueList:
        codes = [v.upper() for v in _split(value)]
        if not codes or not all(_CODE.fullmatch(c) for c in codes):
            raise InvalidRequest(f"{keyword} must be a list of code values such as CT,MR.")
        return ValueList(tuple(codes))
    try:
        return Number(int(value))
    except ValueError:
        raise InvalidRequest(f"{keyword} must be an integer.") from None


def _int_param(name: str, value: str, *, maximum: int | None = None) -> int:
    if not value.isdigit() or len(value) > 9:
        raise InvalidRequest(f"The {name} parameter must be a non-negative integer.")
    number = int(value)
    return min(number, maximum) if maximum is not None else number


def parse_query(params: Iterable[tuple[str, str]], *, level: Level) -> QidoQuery:
    """Parse QIDO-RS query parameters for a search at *level*.

    Raises :class:`~imaging_hub.errors.InvalidRequest` for unknown parameters, attributes
    that cannot be matched at this level, and malformed values.
    """
    matches: dict[str, Match] = {}
    limit = DEFAULT_LIMIT
    offset = 0
    include_all = False
    includes: set[str] = set()
    allowed = LEVEL_KEYS[level]
    for name, value in params:
        if name == "limit":
            limit = _int_param("limit", value, maximum=MAX_LIMIT)
        elif name == "offset":
            offset = _int_param("offset", value)
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidRequest("The fuzzymatching parameter must be true or false.")
        elif name == "includefield":
            for item in _split(value.replace("\\", ",")):
                if item == "all":
                    include_all = True
                    continue
                keyword = keyword_of(item)
                if keyword is None:
                    raise InvalidRequest(f"includefield {item!r} is not a DICOM keyword or tag.")
                includes.add(keyword)
        else:
            keyword = keyword_of(name)
            if keyword is None:
                raise InvalidRequest(f"The query parameter {name!r} is not a DICOM attribute.")
            if keyword not in allowed:
                supported = ", ".join(sorted(allowed))
                raise InvalidRequest(
                    f"Matching on {keyword} is not supported in this search; "
                    f"supported: {supported}."
                )
            if keyword in matches:
                raise InvalidRequest(f"{keyword} is given more than once.")
            if value == "":
                continue  # an empty value is a return key, not a match (PS3.4 C.2.2.1.1)
            matches[keyword] = _match(keyword, value)
    return QidoQuery(
        matches=matches,
        limit=limit,
        offset=offset,
        include_all=include_all,
        includefields=frozenset(includes),
    )
