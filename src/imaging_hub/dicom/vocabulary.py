"""Small pieces of DICOM vocabulary the hub's feature code needs without knowing DICOM itself:
how a multi-valued string attribute is written, the SOP UIDs a received data set names, and the
failure reasons of a refused instance, and the DICOM JSON of a QIDO-RS result.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.dataset import Dataset

from imaging_hub.dicom.dicomjson import UTF8_CHARSET, attributes_to_json, tag_hex
from imaging_hub.dicom.dimse import CANNOT_UNDERSTAND as CANNOT_UNDERSTAND
from imaging_hub.dicom.dimse import DATASET_DOES_NOT_MATCH_SOP_CLASS
from imaging_hub.dicom.dimse import OUT_OF_RESOURCES as OUT_OF_RESOURCES
from imaging_hub.dicom.dimse import PROCESSING_FAILURE as PROCESSING_FAILURE

# Failure Reasons of a refused instance (PS3.4 B.2.3 / PS3.18 Table 10.5.3-1): the DIMSE statuses.
DATASET_DOES_NOT_MATCH = DATASET_DOES_NOT_MATCH_SOP_CLASS

# Retired storage SOP classes that old machines still send (PS3.6 A.1, retired entries); every
# current one is in pynetdicom's AllStoragePresentationContexts (170 classes, incl. multi-frame
# US/XA, secondary capture, SR and Encapsulated PDF).
RETIRED_STORAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Multi-frame Image Storage (Retired)
)

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
