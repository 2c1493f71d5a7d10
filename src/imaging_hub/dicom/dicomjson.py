"""The DICOM JSON Model (PS3.18 F.2): attribute values and datasets as ``application/dicom+json``.

Two sources feed it: attribute values the hub keeps in its database (QIDO-RS answers, built
with :func:`attributes_to_json`) and dataset headers read from stored objects (WADO-RS
metadata, :func:`dataset_to_json`), where large binary values become ``BulkDataURI``\\ s.
Text is always UTF-8 in JSON, so the answer's Specific Character Set is ``ISO_IR 192``.
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.tag import Tag

from imaging_hub.dicom.attributes import decode_text

__all__ = [
    "UTF8_CHARSET",
    "attributes_to_json",
    "dataset_to_json",
    "store_response",
    "tag_hex",
]

log = logging.getLogger(__name__)

#: Specific Character Set (0008,0005) of every JSON answer: JSON text is UTF-8 (PS3.18 F.2).
UTF8_CHARSET = "ISO_IR 192"

#: Binary values at least this long are replaced by a BulkDataURI in metadata (PS3.18 F.2.6).
BULK_DATA_THRESHOLD = 1024

PIXEL_DATA_TAGS = frozenset({"7FE00010", "7FE00008", "7FE00009"})

_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})


def tag_hex(keyword: str) -> str:
    """The eight upper-case hex digits of *keyword*'s tag (the DICOM JSON object key)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword.")
    return f"{tag:08X}"


def _person_name(value: str) -> dict[str, str]:
    groups = value.split("=")
    out: dict[str, str] = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[name] = group
    return out


def _values(vr: str, value: Any) -> list[Any]:
    """Python value(s) of one attribute as a DICOM JSON ``Value`` array (empty: no value)."""
    if value is None or value == "":
        return []
    items: list[Any]
    if isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str) and vr not in ("PN", "LT", "ST", "UT"):
        items = value.split("\\")
    else:
        items = [value]
    out: list[Any] = []
    for item in items:
        if vr == "PN":
            out.append(_person_name(str(item)))
        elif vr in _INT_VRS:
            out.append(int(item))
        elif vr in _FLOAT_VRS:
            out.append(float(item))
        else:
            out.append(str(item))
    return out


def attributes_to_json(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """DICOM JSON for keyword -> value pairs (values as the database keeps them).

    Multi-valued strings use DICOM's backslash separator; person names use ``=`` between the
    alphabetic, ideographic and phonetic groups (PS3.5 6.2). Keys come out in tag order.
    """
    out: dict[str, dict[str, Any]] = {}
    for keyword in sorted(values, key=tag_hex):
        tag = tag_hex(keyword)
        vr = str(dictionary_VR(int(tag, 16)))
        element: dict[str, Any] = {"vr": vr}
        items = _values(vr, values[keyword])
        if items:
            element["Value"] = items
        out[tag] = element
    return out


def dataset_to_json(
    ds: Dataset, *, bulk_data_uri: Callable[[str], str], include: Iterable[int] | None = None
) -> dict[str, Any]:
    """DICOM JSON of a dataset header (PS3.18 F.2); binary values become BulkDataURIs.

    *bulk_data_uri* receives the tag (8 hex digits) of a large binary element and returns its
    URI. Elements pydicom cannot convert (invalid values sent by a modality) are left out and
    logged; group 0002 (File Meta) is never part of the dataset. *include* limits the answer
    to those tags.
    """
    decode_text(ds)
    wanted = None if include is None else set(include)

    def handler(elem: Any) -> str:
        return bulk_data_uri(f"{int(elem.tag):08X}")

    out: dict[str, Any] = {}
    for tag in list(ds.keys()):
        if tag.group in (0x0002, 0xFFFE) or (wanted is not None and int(tag) not in wanted):
            continue
        key = f"{int(tag):08X}"
        try:
            raw = ds.get_item(tag)
            if key in PIXEL_DATA_TAGS:  # always bulk data, whatever its size
                vr = getattr(raw, "VR", None) or "OB"
                out[key] = {"vr": str(vr), "BulkDataURI": bulk_data_uri(key)}
                continue
            out[key] = ds[tag].to_json_dict(handler, BULK_DATA_THRESHOLD)
        except Exception as exc:  # invalid values from modalities must not break the answer
            log.debug("element %s left out of DICOM JSON: %s", key, exc)
    out[tag_hex("SpecificCharacterSet")] = {"vr": "CS", "Value": [UTF8_CHARSET]}
    return dict(sorted(out.items()))


def store_response(
    *,
    retrieve_url: str | None,
    referenced: Iterable[tuple[str, str, str]],
    failed: Iterable[tuple[str, str, int]],
) -> dict[str, Any]:
    """The STOW-RS response dataset (PS3.18 10.5.3, Table 10.5.3-1) in DICOM JSON.

    *referenced*: (SOP Class UID, SOP Instance UID, RetrieveURL) of each stored instance;
    *failed*: (SOP Class UID, SOP Instance UID, Failure Reason) of each refused one (UIDs may
    be empty when the part could not be read).
    """
    ref_items = [
        attributes_to_json(
            {"ReferencedSOPClassUID": cls, "ReferencedSOPInstanceUID": uid, "RetrieveURL": url}
        )
        for cls, uid, url in referenced
    ]
    fail_items = [
        attributes_to_json(
            {"ReferencedSOPClassUID": cls, "ReferencedSOPInstanceUID": uid, "FailureReason": code}
        )
        for cls, uid, code in failed
    ]
    out: dict[str, Any] = {}
    if retrieve_url:
        out[tag_hex("RetrieveURL")] = {"vr": "UR", "Value": [retrieve_url]}
    if fail_items:
        out[tag_hex("FailedSOPSequence")] = {"vr": "SQ", "Value": fail_items}
    if ref_items:
        out[tag_hex("ReferencedSOPSequence")] = {"vr": "SQ", "Value": ref_items}
    return dict(sorted(out.items()))


def keyword_of(name: str) -> str | None:
    """The keyword for a keyword or an 8-hex-digit tag (QIDO-RS parameters), else ``None``."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(Tag(int(name, 16)))
        return keyword or None
    return name if tag_for_keyword(name) is not None else None
