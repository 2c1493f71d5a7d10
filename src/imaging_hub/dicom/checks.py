"""Checks of a received instance before the gateway acknowledges it (PS3.4 B.2.3, PS3.5).

The gateway's C-STORE handler calls :func:`check_received_instance` on the encoded data set it
received. On top of :func:`~imaging_hub.dicom.attributes.identify_instance` (the identifying
UIDs, PS3.5 9.1) it refuses data that would lose pixels silently once the modality deleted its
copy:

- a data set that ends before its last element does (a defined length that runs past the end,
  or an undefined-length element whose delimiter never comes);
- native Pixel Data shorter than Rows x Columns x Samples per Pixel x Bits Allocated / 8 x
  Number of Frames (PS3.5 8.1.1; YBR_FULL_422 carries two samples per pixel, PS3.3 C.7.6.3.1.2);
- encapsulated Pixel Data (PS3.5 A.4) whose items do not tile the value, that lacks its
  Sequence Delimitation Item, that has fewer fragments than frames, or whose last JPEG /
  JPEG-LS / JPEG 2000 codestream does not end with its End Of Image / End Of Codestream marker.

It also reads the requested priority (:func:`requested_priority`) so STAT studies go first.
Reading stays tolerant otherwise: odd but complete data sets are accepted as they are.
"""

import io
import math
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset
from pydicom.fileutil import read_undefined_length_value
from pydicom.tag import SequenceDelimiterTag, Tag
from pydicom.uid import UID

from imaging_hub.dicom.attributes import (
    InstanceIdentity,
    identify_instance,
    is_stray_raw,
    requested_priority,
)
from imaging_hub.dicom.attributes import _int as int_attribute
from imaging_hub.errors import InvalidDicomError

PIXEL_DATA = Tag(0x7FE0, 0x0010)
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG = b"\xfe\xff\x00\xe0"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
DEFLATED = "1.2.840.10008.1.2.1.99"
EOI_MARKER = b"\xff\xd9"
EOI_WINDOW = 64

#: Transfer syntaxes whose frames are JPEG, JPEG-LS or JPEG 2000 codestreams: each frame ends
#: with the marker 0xFFD9 (EOI, ITU-T T.81 B.2.1 and T.87; EOC, ITU-T T.800 A.4.4).
JPEG_FAMILY_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


@dataclass(frozen=True, slots=True)
class CheckedInstance:
    """A received instance that passed every check, with what the gateway needs to queue it."""

    identity: InstanceIdentity
    priority: int
    accession_number: str = ""  # matches the study to an order at the gateway (MPPS, MWL)


def _parse(read: Callable[[], Dataset]) -> tuple[Dataset, bool]:
    """Run pydicom's *read* tolerantly; also say whether it hit the end of the data inside an
    element (pydicom only warns of that)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = read()
    except Exception as exc:  # pydicom raises many kinds of errors on hostile bytes
        raise InvalidDicomError("The data is not a readable DICOM dataset.") from exc
    return ds, any("End of file" in str(w.message) for w in caught)


def _too_short(data: bytes) -> None:
    if len(data) < 8:
        raise InvalidDicomError("The data is too short to be a DICOM dataset.")


def _read(data: bytes) -> tuple[Dataset, bool]:
    """Parse Part-10 bytes tolerantly (see `_parse`)."""
    _too_short(data)
    return _parse(lambda: dcmread(io.BytesIO(data), force=True))


#: Values longer than this are not copied while a received data set is parsed: Pixel Data is
#: only measured (its length is checked against the data); other long values are sliced from
#: the data afterwards (`_fill_deferred`) so that they are converted like any other.
DEFER_BYTES = 64 * 1024


def _read_dataset(dataset: bytes, transfer_syntax_uid: str) -> tuple[Dataset, bool, bytes, bool]:
    """Parse a data set without File Meta Information in *transfer_syntax_uid*, as dcmread
    parses the data set of a file (PS3.5 A: Deflated is inflated first).

    Returns the data set, whether pydicom hit the end of the data inside an element, the
    bytes the element offsets refer to (the inflated bytes for Deflated), and whether they are
    little endian. Values over `DEFER_BYTES` are deferred (see `_fill_deferred`).
    """
    _too_short(dataset)
    syntax = UID(transfer_syntax_uid)
    try:
        implicit = syntax.is_implicit_VR
        little = syntax.is_little_endian
        deflated = syntax.is_deflated
    except ValueError:  # not a transfer syntax pydicom knows: encapsulated ones are like this
        implicit, little, deflated = False, True, False
    if deflated:
        try:
            dataset = zlib.decompress(dataset, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise InvalidDicomError("The data is not a readable DICOM dataset.") from exc
    ds, ended_early = _parse(
        lambda: read_dataset(io.BytesIO(dataset), implicit, little, defer_size=DEFER_BYTES)
    )
    return ds, ended_early, dataset, little


def _raw_elements(ds: Dataset) -> dict[Any, RawDataElement]:
    """The top-level elements of *ds* still raw (not converted), by tag: every check below
    looks at them, and reading them out of the Dataset once costs less than once per check."""
    raws: dict[Any, RawDataElement] = {}
    for tag in list(ds.keys()):
        item = ds.get_item(tag, keep_deferred=True)
        if isinstance(item, RawDataElement):
            raws[tag] = item
    return raws


def _fill_deferred(
    ds: Dataset, raws: dict[Any, RawDataElement], data: bytes, *, little: bool
) -> None:
    """Give deferred values their bytes from *data*, as pydicom would have read them, except
    native (defined-length) Pixel Data, whose length `_check_lengths` checks."""
    for tag, raw in raws.items():
        if raw.value is not None or raw.length == 0:
            continue
        if raw.length != UNDEFINED_LENGTH:
            if tag == PIXEL_DATA:
                continue
            value: bytes | None = data[raw.value_tell : raw.value_tell + raw.length]
        else:
            stream = io.BytesIO(data)
            stream.seek(raw.value_tell)
            value = read_undefined_length_value(stream, little, SequenceDelimiterTag)
        raws[tag] = raw._replace(value=value)
        ds[tag] = raws[tag]


def _raw(ds: Dataset, tag: Any) -> RawDataElement | None:
    item = ds.get_item(tag, keep_deferred=True)
    return item if isinstance(item, RawDataElement) else None


def _check_lengths(raws: dict[Any, RawDataElement], size: int) -> None:
    for tag, raw in raws.items():
        if raw.length == UNDEFINED_LENGTH:
            continue
        if raw.value_tell + raw.length > size:
            raise InvalidDicomError(
                f"The data set ends inside element {Tag(tag)}: the instance is truncated."
            )


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = int_attribute(ds, keyword)
    return default if value is None else value


def expected_native_length(ds: Dataset) -> int | None:
    """Bytes native Pixel Data must hold (PS3.5 8.1.1), or None if the image module is absent."""
    rows = _int(ds, "Rows")
    columns = _int(ds, "Columns")
    bits = _int(ds, "BitsAllocated")
    if not rows or not columns or not bits:
        return None
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # PS3.3 C.7.6.3.1.2: Cb and Cr shared by two pixels
    return math.ceil(rows * columns * samples * bits * frames / 8)


def _fragments(value: bytes) -> list[bytes]:
    """Items of an encapsulated Pixel Data value (PS3.5 A.4); they must tile it exactly."""
    items: list[bytes] = []
    offset = 0
    while offset < len(value):
        if offset + 8 > len(value) or value[offset : offset + 4] != ITEM_TAG:
            raise InvalidDicomError("The encapsulated Pixel Data is not a sequence of items.")
        (length,) = struct.unpack_from("<I", value, offset + 4)
        start = offset + 8
        if length == UNDEFINED_LENGTH or start + length > len(value):
            raise InvalidDicomError("The encapsulated Pixel Data ends inside a fragment.")
        items.append(value[start : start + length])
        offset = start + length
    return items


def _transfer_syntax(ds: Dataset) -> str:
    return str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""


def _check_encapsulated(
    ds: Dataset, raw: RawDataElement, data: bytes | None, transfer_syntax_uid: str
) -> None:
    value = bytes(raw.value or b"")
    end = raw.value_tell + len(value)
    if data is not None and data[end : end + 8] != SEQUENCE_DELIMITER:
        raise InvalidDicomError(
            "The encapsulated Pixel Data has no Sequence Delimitation Item: it ends early."
        )
    items = _fragments(value)
    fragments = [f for f in items[1:] if f]  # items[0] is the Basic Offset Table
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if not fragments or len(fragments) < frames:
        raise InvalidDicomError(
            f"The encapsulated Pixel Data holds {len(fragments)} fragments for {frames} frames."
        )
    # 0xFFD9 cannot occur inside entropy-coded data of these codestreams (byte stuffing), so
    # its absence near the end means the stream was cut. Some encoders pad or leave a few
    # bytes after it; decoders ignore them.
    if (
        transfer_syntax_uid in JPEG_FAMILY_SYNTAXES
        and EOI_MARKER not in fragments[-1][-EOI_WINDOW:]
    ):
        raise InvalidDicomError(
            "The last compressed frame ends without its end-of-image marker: "
            "the pixel data is truncated."
        )


def check_pixel_data(ds: Dataset, data: bytes | None, transfer_syntax_uid: str) -> None:
    """Raise InvalidDicomError if Pixel Data is present but incomplete (see module doc).

    *data* is what *ds* was read from; None when offsets do not refer to it (Deflated).
    """
    raw = _raw(ds, PIXEL_DATA)
    if raw is None:
        if PIXEL_DATA in ds and ds[PIXEL_DATA].value is None:
            raise InvalidDicomError("The Pixel Data element has no value.")
        return
    if raw.length == UNDEFINED_LENGTH:
        _check_encapsulated(ds, raw, data, transfer_syntax_uid)
        return
    expected = expected_native_length(ds)
    actual = raw.length if raw.value is None else len(raw.value)  # None: deferred, in the data
    if expected is not None and actual < expected:
        raise InvalidDicomError(
            f"The Pixel Data holds {actual} bytes but the image needs {expected}: "
            "the pixel data is truncated."
        )


# Text value representations (PS3.5 6.2): converting one only decodes characters, which pydicom
# does tolerantly (warnings, never errors), so the check leaves them raw; most of a header is
# text, and converting it was most of the check's time. Every other element is converted:
# sequences parse their items, binary values must tile their length, an unknown VR (corrupt
# bytes) fails, as they would at the hub.
_TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)


def _convert_structured(ds: Dataset, raws: dict[Any, RawDataElement]) -> None:
    """Convert every element whose conversion can fail (all but defined-length text), so that
    parse errors surface here and not at the hub.

    Stray items of defined length (before or after the Pixel Data, seen from real ultrasound
    machines, see :func:`~imaging_hub.dicom.attributes.is_stray_item`) are harmless and left
    as they are; the hub's reader steps over them.
    """
    for tag, raw in raws.items():
        if is_stray_raw(raw):
            continue
        if raw.value is None and raw.length:
            continue  # deferred Pixel Data (its length is checked): bytes as they are
        if raw.VR not in _TEXT_VRS or raw.length == UNDEFINED_LENGTH:
            ds[tag]


def _check_parsed(
    ds: Dataset,
    *,
    ended_early: bool,
    data: bytes | None,
    transfer_syntax_uid: str | None = None,
    sop_class_uid: str | None = None,
    deferred_little_endian: bool | None = None,
) -> CheckedInstance:
    """The checks after parsing; *data* is what the offsets in *ds* refer to, if known.

    With *deferred_little_endian* (True or False), *ds* was read with values deferred
    (`DEFER_BYTES`) from *data*, in that byte order.
    """
    if ended_early:
        raise InvalidDicomError("The data set ends before its last element does: it is truncated.")
    if len(ds) == 0:
        raise InvalidDicomError("The data does not contain any DICOM elements.")
    syntax = _transfer_syntax(ds) if transfer_syntax_uid is None else transfer_syntax_uid
    try:
        raws = _raw_elements(ds)
        if data is not None:
            _check_lengths(raws, len(data))
            if deferred_little_endian is not None:
                _fill_deferred(ds, raws, data, little=deferred_little_endian)
        check_pixel_data(ds, data, syntax)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tolerant: odd values are the modality's business
            _convert_structured(ds, raws)
            identity = identify_instance(
                ds, transfer_syntax_uid=transfer_syntax_uid, sop_class_uid=sop_class_uid
            )
            return CheckedInstance(
                identity=identity,
                priority=requested_priority(ds),
                accession_number=_accession_number(ds),
            )
    except InvalidDicomError:
        raise
    except Exception as exc:
        raise InvalidDicomError("The data is not a readable DICOM dataset.") from exc


def _accession_number(ds: Dataset) -> str:
    """The Accession Number (SH, at most 16 characters), "" when absent or unreadable (it
    never refuses an instance)."""
    try:
        value = ds.get("AccessionNumber")
    except Exception:
        return ""
    if not isinstance(value, str):
        return ""
    return value.strip(" \x00")[:16]


def check_received_instance(data: bytes) -> CheckedInstance:
    """Check Part-10 bytes (a STOW-RS part, a file); raise InvalidDicomError when unusable.

    Checks, in order: readable, not truncated, identifying UIDs valid, Pixel Data complete.
    """
    ds, ended_early = _read(data)
    deflated = _transfer_syntax(ds) == DEFLATED  # offsets refer to the inflated stream
    return _check_parsed(ds, ended_early=ended_early, data=None if deflated else data)


def check_received_dataset(
    dataset: bytes, *, transfer_syntax_uid: str, sop_class_uid: str
) -> CheckedInstance:
    """Check a data set as C-STORE delivers it: no File Meta Information, encoded in the
    presentation context's *transfer_syntax_uid*; *sop_class_uid* is the request's, used
    when the data set lacks its own (as the File Meta Information would supply it).

    The same checks as :func:`check_received_instance`, without copying Pixel Data.
    """
    ds, ended_early, parsed, little = _read_dataset(dataset, transfer_syntax_uid)
    return _check_parsed(
        ds,
        ended_early=ended_early,
        data=parsed,
        transfer_syntax_uid=transfer_syntax_uid,
        sop_class_uid=sop_class_uid,
        deferred_little_endian=little,
    )
