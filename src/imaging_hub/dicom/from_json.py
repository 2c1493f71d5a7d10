"""Part-10 instances from the DICOM JSON Model plus bulk data (STOW-RS, PS3.18 10.5.1.2).

A STOW-RS request of ``type="application/dicom+json"`` carries each instance as a DICOM JSON
object (PS3.18 F.2) whose large binary values are ``BulkDataURI``\\ s naming other parts of the
request (by their Content-Location). :func:`part10_from_json` turns one such object into the
Part-10 bytes the hub stores, which then go through the same checks and registration as an
instance sent as ``application/dicom``.

Pixel Data sent as ``application/octet-stream`` is native (Explicit VR Little Endian); sent in a
compressed single-frame media type (``image/jls``, ``image/jp2``, ``image/jpeg``, ...) it is
one compressed frame, encapsulated (PS3.5 A.4) in the transfer syntax the part names (its
``transfer-syntax`` parameter, else the media type's lossless syntax).
"""

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging_hub.dicom.dicomjson import UTF8_CHARSET
from imaging_hub.dicom.frames import MEDIA_TYPES
from imaging_hub.errors import InvalidDicomError

__all__ = ["BulkData", "json_sop_uids", "part10_from_json"]

PIXEL_DATA = "7FE00010"
OCTET_STREAM = "application/octet-stream"

#: The syntax a compressed media type means when its part names none (PS3.18 Table 8.7.3-5).
DEFAULT_SYNTAX_OF_MEDIA_TYPE = {
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}


@dataclass(frozen=True)
class BulkData:
    """One bulk data part of the request: its bytes, media type and transfer syntax (if any)."""

    data: bytes
    media_type: str
    transfer_syntax_uid: str | None = None


def _pixel_syntax(bulk: BulkData) -> str:
    """The transfer syntax Pixel Data in *bulk* is encoded in, or InvalidDicomError."""
    if bulk.media_type == OCTET_STREAM:
        if bulk.transfer_syntax_uid not in (None, ExplicitVRLittleEndian):
            raise InvalidDicomError(
                "Native Pixel Data (application/octet-stream) must be Explicit VR Little Endian."
            )
        return str(ExplicitVRLittleEndian)
    syntax = bulk.transfer_syntax_uid or DEFAULT_SYNTAX_OF_MEDIA_TYPE.get(bulk.media_type, "")
    if MEDIA_TYPES.get(syntax) != bulk.media_type:
        raise InvalidDicomError(
            f"Pixel Data sent as {bulk.media_type} with transfer syntax {syntax or '(none)'} "
            "does not match any compressed transfer syntax."
        )
    return syntax


def json_sop_uids(item: Mapping[str, Any]) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) of a DICOM JSON object, best effort, for responses."""

    def first(tag: str) -> str:
        try:
            return str(item[tag]["Value"][0])[:64]
        except (KeyError, IndexError, TypeError):
            return ""

    return first("00080016"), first("00080018")


def part10_from_json(item: Mapping[str, Any], *, bulk_data: Mapping[str, BulkData]) -> bytes:
    """The Part-10 bytes of one DICOM JSON object, its BulkDataURIs taken from *bulk_data*.

    *bulk_data* maps each part's Content-Location to its content. Text is written as UTF-8
    (Specific Character Set ``ISO_IR 192``: JSON text is Unicode whatever the client's
    character set was). Raises InvalidDicomError when the object is not a DICOM JSON dataset,
    names a bulk data part the request lacks, or its Pixel Data cannot be encoded.
    """
    syntax = [str(ExplicitVRLittleEndian)]

    def bulk(tag: str, vr: str, uri: str) -> bytes:
        part = bulk_data.get(uri)
        if part is None:
            raise InvalidDicomError(f"The BulkDataURI of element {tag} names no part sent.")
        if tag.upper() != PIXEL_DATA:
            return part.data
        syntax[0] = _pixel_syntax(part)
        if part.media_type == OCTET_STREAM:
            return part.data
        return encapsulate([part.data])  # one compressed frame (PS3.5 A.4)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = Dataset.from_json(dict(item), bulk_data_uri_handler=bulk)
    except InvalidDicomError:
        raise
    except Exception as exc:  # pydicom raises many kinds of errors on odd JSON
        raise InvalidDicomError("The metadata is not a valid DICOM JSON dataset.") from exc
    ts = UID(syntax[0])
    if ts.is_compressed and int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise InvalidDicomError("Compressed Pixel Data is accepted for single-frame images only.")
    ds.SpecificCharacterSet = UTF8_CHARSET
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    if ts.is_compressed and "PixelData" in ds:
        ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:  # missing UIDs, values that cannot be encoded, ...
        raise InvalidDicomError(
            f"The metadata cannot be written as a DICOM file ({type(exc).__name__})."
        ) from exc
    return out.getvalue()
