"""Small pieces of DICOM vocabulary the hub's feature code needs without knowing DICOM itself:
how a multi-valued string attribute is written, the SOP UIDs a received data set names, and the
failure reasons of a refused instance, and the DICOM JSON of a QIDO-RS result.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset

from imaging_hub.dicom.dicomjson import UTF8_CHARSET, attributes_to_json, tag_hex

#: Failure Reasons of a refused instance (PS3.4 B.2.3 / PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

#: The separator of the values of a multi-valued string attribute (PS3.5 6.4).
VALUE_SEPARATOR = "\\"
#: The longest value of a CS-like summary attribute kept on a study (e.g. ModalitiesInStudy).
SUMMARY_LIMIT = 64


def join_values(values: Iterable[str], *, limit: int = SUMMARY_LIMIT) -> str:
    """*values* as one multi-valued attribute value (``CT\\MR``), cut to *limit* characters."""
    return VALUE_SEPARATOR.join(values)[:limit]


def named_sop_uids(ds: Dataset) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) as *ds* names them, unvalidated, each at most 64
    characters; the SOP class falls back to the File Meta Information's. Empty when absent."""
    meta = getattr(ds, "file_meta", None)
    fallback = meta.get("MediaStorageSOPClassUID", "") if meta else ""
    sop_class = str(ds.get("SOPClassUID") or fallback)
    return sop_class[:64], str(ds.get("SOPInstanceUID") or "")[:64]


#: The attribute of a QIDO-RS result that says where to retrieve it (PS3.18 10.6.3).
RETRIEVE_URL = "RetrieveURL"
_RETRIEVE_URL_TAG = tag_hex(RETRIEVE_URL)


def qido_result(
    values: Mapping[str, Any], *, retrieve_url: str, header: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One QIDO-RS result as DICOM JSON, tags in order: *values* (attribute keyword -> value,
    UTF-8), over the DICOM JSON *header* of the stored instance when given, and its RetrieveURL."""
    item = attributes_to_json({**values, "SpecificCharacterSet": UTF8_CHARSET})
    if header is not None:
        header.update(item)
        item = header
    item[_RETRIEVE_URL_TAG] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(item.items()))


def tags_of(keywords: Iterable[str]) -> set[int]:
    """The tags of attribute *keywords* (as ``includefield`` names them)."""
    return {int(tag_hex(k), 16) for k in keywords}
