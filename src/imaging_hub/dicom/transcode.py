"""Lossless transcoding of DICOM instances for the clinic-to-hub WAN link.

The clinic gateway may re-encode native (uncompressed) Pixel Data with a lossless codec
before forwarding, to save bandwidth on a weak link: JPEG-LS Lossless (PS3.5 8.2.3, the
default; fast and about as small as JPEG 2000 for radiographs) or JPEG 2000 Lossless
(PS3.5 8.2.4). The guarantee in ARCHITECTURE.md is that pixels stay identical, so every
result is decoded again and compared with the original pixel array before it is used.
Anything we cannot transcode safely is returned untouched, with a reason.

What changes on transcoding, and nothing else (checked on every call):

- group 0002 (File Meta Information, PS3.10 7.1): *Transfer Syntax UID* is set to the new
  syntax, *File Meta Information Group Length* is recomputed, and pydicom adds
  *Implementation Class UID* / *Version Name* only where they were missing;
- (7FE0,0010) *Pixel Data*: encapsulated (PS3.5 A.4), VR OB, undefined length;
- (0028,0006) *Planar Configuration*: set to 0 (colour-by-pixel) for colour images, because
  the encoder is given interleaved samples; PS3.5 8.2.3/8.2.4 make its value irrelevant for
  JPEG-LS and JPEG 2000 codestreams;
- (7FE0,0001)/(7FE0,0002) *Extended Offset Table (Lengths)*: pydicom adds them only when the
  encapsulated frames exceed the 4 GiB Basic Offset Table limit.

The *SOP Instance UID* is kept (the hub is idempotent by it), and so is every other element:
the value of each element outside the list above is compared between input and output.
Input in Explicit VR Little Endian or Implicit VR Little Endian is re-encoded as Explicit VR
Little Endian (the encapsulated syntaxes require it); values are unchanged by that.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import iter_pixels
from pydicom.pixels.utils import pixel_array as pydicom_pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from imaging_hub.errors import InvalidDicomError

__all__ = [
    "JPEG2000_LOSSLESS",
    "JPEG_LS_LOSSLESS",
    "SHA256_TRAILER",
    "UNVERIFIED",
    "WAN_SYNTAXES",
    "StreamHead",
    "TranscodeResult",
    "decode_frame",
    "encode_codestream_for_wan",
    "encode_for_wan",
    "encode_head_for_wan",
    "join_streamed",
    "pixels_equal",
    "read_part10",
    "tolerant_reading",
    "transcode_for_wan",
    "verify_for_wan",
    "warm_up_instance",
]

logger = logging.getLogger(__name__)

#: JPEG-LS Lossless Image Compression (PS3.5 8.2.3), encoded by pyjpegls (CharLS).
JPEG_LS_LOSSLESS: UID = JPEGLSLossless
#: JPEG 2000 Image Compression (Lossless Only) (PS3.5 8.2.4), encoded by pylibjpeg-openjpeg.
JPEG2000_LOSSLESS: UID = JPEG2000Lossless

#: The syntaxes we transcode to, with the pydicom encoding plugin used for each.
WAN_SYNTAXES: dict[UID, str] = {
    JPEG_LS_LOSSLESS: "pyjpegls",
    JPEG2000_LOSSLESS: "pylibjpeg",
}

PIXEL_DATA = Tag(0x7FE0, 0x0010)
FLOAT_PIXEL_DATA = Tag(0x7FE0, 0x0008)
DOUBLE_FLOAT_PIXEL_DATA = Tag(0x7FE0, 0x0009)
PLANAR_CONFIGURATION = Tag(0x0028, 0x0006)
EXTENDED_OFFSET_TABLE = Tag(0x7FE0, 0x0001)
EXTENDED_OFFSET_TABLE_LENGTHS = Tag(0x7FE0, 0x0002)

#: Data set elements (outside group 0002) that transcoding may legitimately change.
CHANGED_BY_TRANSCODING: frozenset[BaseTag] = frozenset(
    {PIXEL_DATA, PLANAR_CONFIGURATION, EXTENDED_OFFSET_TABLE, EXTENDED_OFFSET_TABLE_LENGTHS}
)

# VRs whose values pydicom does not byte-swap when a data set changes endianness.
_ENDIAN_SENSITIVE_VRS = frozenset({"OW", "OF", "OD", "OL", "OV", "UN"})


@dataclass(frozen=True, slots=True)
class TranscodeResult:
    """The outcome of :func:`transcode_for_wan`.

    ``data`` is the Part-10 file to send: the transcoded one if ``transcoded`` is true,
    otherwise the original bytes unchanged, with ``reason`` saying why.
    """

    data: bytes
    transfer_syntax_uid: UID
    transcoded: bool
    original_size: int
    size: int
    reason: str | None = None

    @property
    def ratio(self) -> float:
        """Original size divided by result size (1.0 when untouched)."""
        return self.original_size / self.size if self.size else 1.0


@contextlib.contextmanager
def tolerant_reading() -> Iterator[None]:
    """Read what modalities send without turning pydicom's warnings into failures.

    pydicom warns about many harmless real-world quirks (invalid VR values, odd lengths,
    unknown character sets). Reading is tolerant by design (STYLE.md 12), so inside this
    block those warnings are recorded and logged at debug level instead of propagating.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for item in caught:
        logger.debug("pydicom warning while reading: %s", item.message)


def read_part10(data: bytes) -> FileDataset:
    """Parse Part-10 bytes (PS3.10 7.1) into a dataset, tolerantly.

    Raises :class:`~imaging_hub.errors.InvalidDicomError` when the bytes are not a DICOM
    file pydicom can parse.
    """
    try:
        with tolerant_reading():
            ds = pydicom.dcmread(io.BytesIO(data))
    except PydicomInvalidDicomError as exc:
        raise InvalidDicomError("The data is not a DICOM Part-10 file.") from exc
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise InvalidDicomError(
            f"The DICOM file could not be parsed ({type(exc).__name__})."
        ) from exc
    return ds


def _untouched(data: bytes, ts: UID, reason: str) -> TranscodeResult:
    logger.debug("Not transcoding: %s", reason)
    return TranscodeResult(
        data=data,
        transfer_syntax_uid=ts,
        transcoded=False,
        original_size=len(data),
        size=len(data),
        reason=reason,
    )


def _has_endian_sensitive_elements(ds: Dataset) -> bool:
    """Whether any element besides Pixel Data has a VR pydicom would not byte-swap."""
    return any(elem.tag != PIXEL_DATA and elem.VR in _ENDIAN_SENSITIVE_VRS for elem in ds.iterall())


def _stray_high_bits(ds: Dataset, ts: UID) -> bool:
    """Whether native Pixel Data has bits set above Bits Stored (PS3.5 8.1.1).

    pydicom masks (or sign-extends) those bits away when decoding, so the decoded arrays
    would compare equal although the codec drops them; refuse rather than lose them.
    """
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.BitsStored)
    if bits_stored >= bits_allocated:
        return False
    order = "<" if ts.is_little_endian else ">"
    raw = np.frombuffer(ds.PixelData, dtype=f"{order}u{bits_allocated // 8}")
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    high = raw >> (bits_stored - 1 if signed else bits_stored)
    if not signed:
        return bool(high.any())
    # signed: the bits from the sign bit up must be all zeros or all ones
    all_ones = (1 << (bits_allocated - bits_stored + 1)) - 1
    return bool(((high != 0) & (high != all_ones)).any())


def _codec_limitation(ds: Dataset, syntax: UID) -> str | None:
    """A whole-sentence reason why *syntax* cannot encode this image, or ``None``."""
    bits_allocated = int(ds.get("BitsAllocated", 0))
    bits_stored = int(ds.get("BitsStored", 0))
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", ""))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    name = syntax.name
    if bits_allocated not in (8, 16):
        return f"{name} transcoding supports Bits Allocated 8 or 16, not {bits_allocated}."
    if not 2 <= bits_stored <= bits_allocated:
        return f"{name} transcoding does not support Bits Stored {bits_stored}."
    if samples not in (1, 3):
        return f"{name} transcoding does not support Samples per Pixel {samples}."
    allowed = {
        JPEG_LS_LOSSLESS: {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"},
        JPEG2000_LOSSLESS: {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"},
    }[syntax]
    if photometric not in allowed:
        return f"{name} cannot carry Photometric Interpretation {photometric or '(none)'}."
    if samples == 3 and signed:
        return f"{name} transcoding does not support signed colour pixels."
    if syntax == JPEG_LS_LOSSLESS and photometric == "YBR_FULL" and bits_allocated != 8:
        return f"{name} carries YBR_FULL only with 8-bit samples."
    return None


def _compared(tag: BaseTag) -> bool:
    """Whether verification compares this data set element between input and output.

    Group length elements (gggg,0000) outside group 0002 are retired (PS3.5 7.2) and
    pydicom drops them when writing, so they are not compared either.
    """
    return tag not in CHANGED_BY_TRANSCODING and tag.element != 0x0000


def _non_pixel_differences(before: Dataset, after: Dataset) -> list[str]:
    """Keywords (or tags) of data set elements whose value differs, outside the allowed set."""
    # Dataset iterates over elements, not tags, hence .keys()
    keys_before = {t for t in before.keys() if _compared(t)}  # noqa: SIM118
    keys_after = {t for t in after.keys() if _compared(t)}  # noqa: SIM118
    differences = [str(Tag(t)) for t in keys_before ^ keys_after]
    for tag in sorted(keys_before & keys_after):
        if before[tag].value != after[tag].value:
            differences.append(before[tag].keyword or str(before[tag].tag))
    return differences


#: Decoders used to verify each target syntax: CharLS (pyjpegls) decodes JPEG-LS about 5x
#: faster than libjpeg here (0.13 s against 0.65 s for a 3000x2500 DX), which matters because
#: verification sits on the WAN upload path; pydicom picks for JPEG 2000.
VERIFY_DECODERS: dict[str, str] = {JPEG_LS_LOSSLESS: "pyjpegls", JPEG2000_LOSSLESS: ""}


def _frames_equal(expected: np.ndarray[Any, Any], ds: Dataset) -> bool:
    """Whether the decoded pixels of *ds* equal *expected* (all frames, raw samples)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected_frames = expected[np.newaxis, ...] if frames == 1 else expected
    count = 0
    plugin = VERIFY_DECODERS.get(str(ds.file_meta.TransferSyntaxUID), "")
    for index, frame in enumerate(iter_pixels(ds, raw=True, decoding_plugin=plugin)):
        if index >= len(expected_frames) or not np.array_equal(frame, expected_frames[index]):
            return False
        count += 1
    return count == len(expected_frames)


def transcode_for_wan(data: bytes, *, syntax: str = JPEG_LS_LOSSLESS) -> TranscodeResult:
    """Re-encode native Pixel Data losslessly for the WAN, verified pixel for pixel.

    *syntax* is :data:`JPEG_LS_LOSSLESS` (default) or :data:`JPEG2000_LOSSLESS`. Instances
    that are already encapsulated (any compressed syntax, PS3.5 A.4), have no Pixel Data, or
    that the codec cannot represent exactly are returned untouched with a reason. The
    transcoded result is decoded again and must equal the original pixel array
    (``np.array_equal``) and keep every other element's value (see the module docstring),
    or the original is returned with the reason "verification failed".

    :func:`encode_for_wan` and :func:`verify_for_wan` are its two halves, for callers that
    overlap the verification with other work (the gateway's uploads).

    Raises :class:`~imaging_hub.errors.InvalidDicomError` if *data* is not a DICOM
    Part-10 file, and :class:`ValueError` for an unsupported *syntax*.
    """
    encoded = encode_for_wan(data, syntax=syntax)
    if not encoded.transcoded:
        return encoded
    failure = verify_for_wan(data, encoded.data, syntax=syntax)
    if failure is not None:
        return _untouched(data, UID(str(read_part10(data).file_meta.TransferSyntaxUID)), failure)
    return replace(encoded, reason=None)


#: ``reason`` of an :func:`encode_for_wan` result that :func:`verify_for_wan` has not checked.
UNVERIFIED = "Not verified yet."


def _native_source(
    data: bytes, target: UID
) -> tuple[FileDataset, np.ndarray[Any, Any]] | TranscodeResult:
    """The data set and its raw pixel array, if *target* can re-encode it losslessly;
    otherwise the original untouched with the reason why."""
    if target not in WAN_SYNTAXES:
        raise ValueError(f"Transcoding to {target} is not supported; use JPEG-LS or JPEG 2000.")
    ds = read_part10(data)
    ts_value = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not ts_value:
        return _untouched(data, UID(""), "The file has no Transfer Syntax UID in its File Meta.")
    ts = UID(str(ts_value))
    if not ts.is_transfer_syntax:
        return _untouched(data, ts, f"The transfer syntax {ts} is not one pydicom knows.")
    if ts.is_compressed:
        return _untouched(data, ts, f"The pixel data is already encapsulated ({ts.name}).")
    if ts == DeflatedExplicitVRLittleEndian:
        return _untouched(data, ts, "The data set is deflated; it is left as it is.")
    if FLOAT_PIXEL_DATA in ds or DOUBLE_FLOAT_PIXEL_DATA in ds:
        return _untouched(data, ts, "Float pixel data cannot be encoded with a lossless codec.")
    if PIXEL_DATA not in ds:
        return _untouched(data, ts, "The instance has no Pixel Data.")
    try:
        with tolerant_reading():
            limitation = _codec_limitation(ds, target)
            endian_trouble = ts == ExplicitVRBigEndian and _has_endian_sensitive_elements(ds)
            stray_bits = limitation is None and _stray_high_bits(ds, ts)
    except Exception as exc:  # invalid values in the Image Pixel module of a real file
        return _untouched(data, ts, f"The Image Pixel attributes are invalid ({exc}).")
    if limitation is not None:
        return _untouched(data, ts, limitation)
    if stray_bits:
        return _untouched(
            data, ts, "The Pixel Data has bits set above Bits Stored, which the codec would drop."
        )
    if endian_trouble:
        return _untouched(
            data,
            ts,
            "The big endian data set has OW/OF/UN elements besides Pixel Data, "
            "which cannot be converted to little endian safely.",
        )
    try:
        with tolerant_reading():
            original = pydicom_pixel_array(ds, raw=True)
    except Exception as exc:
        return _untouched(data, ts, f"The native Pixel Data could not be decoded ({exc}).")
    return ds, original


def encode_for_wan(data: bytes, *, syntax: str = JPEG_LS_LOSSLESS) -> TranscodeResult:
    """The first half of :func:`transcode_for_wan`: the encoded file, NOT yet verified
    (``reason`` is :data:`UNVERIFIED`), or the original untouched with the reason why.

    Never send an encoded result before :func:`verify_for_wan` accepted it.
    """
    target = UID(syntax)
    source = _native_source(data, target)
    if isinstance(source, TranscodeResult):
        return source
    ds, original = source
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    buffer = io.BytesIO()
    try:
        with tolerant_reading():  # writing converts raw elements, which may warn
            if int(ds.get("SamplesPerPixel", 1)) == 3:
                ds.PlanarConfiguration = 0  # the encoder is given interleaved samples
            ds.compress(
                target,
                original,
                encoding_plugin=WAN_SYNTAXES[target],
                generate_instance_uid=False,
            )
            # dcmwrite, not save_as: save_as refuses a big endian data set written as little
            # endian; _has_endian_sensitive_elements() made sure no value needs byte-swapping.
            pydicom.dcmwrite(
                buffer, ds, implicit_vr=False, little_endian=True, enforce_file_format=True
            )
    except Exception as exc:  # codecs raise many types; the original is always a safe answer
        return _untouched(data, ts, f"The {target.name} encoder refused the image ({exc}).")
    encoded = buffer.getvalue()
    if len(encoded) >= len(data):
        return _untouched(data, ts, "The transcoded file would not be smaller than the original.")
    return TranscodeResult(
        data=encoded,
        transfer_syntax_uid=target,
        transcoded=True,
        original_size=len(data),
        size=len(encoded),
        reason=UNVERIFIED,
    )


# ---- Streamed JPEG-LS: the first bytes leave before the whole image is encoded ----------------
#
# JPEG-LS (ITU-T T.87) codes the samples in raster order, each from its causal neighbours and
# from context statistics gathered on the samples before it, never from a later line. So the
# codestream of an image's first R lines, encoded as an image of its own with the same
# parameters, is -- but for its height in the frame header and the last few bytes the encoder
# pads at its end -- the first bytes of the whole image's codestream. The gateway sends those
# (fragment 1) while a second process encodes the whole image; the rest of the codestream
# (fragment 2) follows. A frame in more than one fragment is ordinary DICOM (PS3.5 A.4); the
# codestream is one standard JPEG-LS scan, with no restart markers (which dcmtk 3.6.7 cannot
# decode). join_streamed() refuses a whole codestream that does not begin with fragment 1, and
# the joined file is verified like any other before the hub may keep it.

#: Share of an image's lines encoded first, on their own: about 1/8 of the compressed bytes,
#: which at 20 Mbit/s take longer to send than the whole image takes to encode.
HEAD_FRACTION = 1 / 8
#: Lines fewer than this are not worth a head of their own.
MIN_STREAMED_ROWS = 64
#: Bytes at the end of the head's own codestream that the whole one may not share: its end of
#: image marker and the encoder's padding of its last bits (three bytes measured; margin kept).
HEAD_TAIL_MARGIN = 16
#: ``X-Content-SHA256`` of an upload whose SHA-256 (64 hex digits) ends its body instead: the
#: gateway streams a file whose digest it cannot know before the last byte.
SHA256_TRAILER = "trailer"
SHA256_HEX_DIGITS = 64

_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_SOF55 = 0xF7
_SOS = 0xDA


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The start of an instance's JPEG-LS file, encoded from the image's first lines alone.

    ``data`` is the Part-10 file from its preamble to the end of the first fragment of Pixel
    Data (``fragment``): the first bytes of the whole image's codestream.
    """

    data: bytes
    fragment: bytes
    original_size: int


def _item(value: bytes) -> bytes:
    return _ITEM + struct.pack("<I", len(value)) + value


def _with_height(codestream: bytes, rows: int) -> bytes:
    """*codestream* with the number of lines in its JPEG-LS frame header (SOF55) set to *rows*."""
    position = 2  # after SOI
    while position + 4 <= len(codestream):
        if codestream[position] != 0xFF:
            break
        marker = codestream[position + 1]
        (length,) = struct.unpack_from(">H", codestream, position + 2)
        if marker == _SOF55:
            patched = bytearray(codestream)
            patched[position + 5 : position + 7] = struct.pack(">H", rows)
            return bytes(patched)
        if marker == _SOS:
            break
        position += 2 + length
    raise ValueError("The JPEG-LS codestream has no frame header.")


def _jpegls_codestream(ds: Dataset, pixels: np.ndarray[Any, Any]) -> bytes:
    """The JPEG-LS lossless codestream of *pixels* (lines of *ds*'s single grey frame)."""
    encoder = get_encoder(JPEG_LS_LOSSLESS)
    return bytes(
        encoder.encode(
            np.ascontiguousarray(pixels),
            encoding_plugin=WAN_SYNTAXES[JPEG_LS_LOSSLESS],
            rows=int(pixels.shape[0]),
            columns=int(ds.Columns),
            samples_per_pixel=1,
            number_of_frames=1,
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.BitsStored),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric_interpretation=str(ds.PhotometricInterpretation),
        )
    )


def _streamable(data: bytes, syntax: str) -> tuple[FileDataset, np.ndarray[Any, Any]] | None:
    """The data set and pixels of an image the streamed encoding applies to, else None: a
    single grey frame of at least 2 x MIN_STREAMED_ROWS lines, going to JPEG-LS, with nothing
    after Pixel Data (the head ends inside it)."""
    if UID(syntax) != JPEG_LS_LOSSLESS:
        return None
    try:
        source = _native_source(data, JPEG_LS_LOSSLESS)
    except InvalidDicomError:
        return None
    if isinstance(source, TranscodeResult):
        return None
    ds, pixels = source
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or int(ds.get("SamplesPerPixel", 1)) != 1:
        return None
    if pixels.ndim != 2 or pixels.shape[0] < 2 * MIN_STREAMED_ROWS:
        return None
    if max(ds.keys()) != PIXEL_DATA:
        return None
    return ds, pixels


def encode_head_for_wan(data: bytes, *, syntax: str = JPEG_LS_LOSSLESS) -> StreamHead | None:
    """The start of *data*'s JPEG-LS file, encoded from its first lines (HEAD_FRACTION), or
    None when the streamed encoding does not apply (then use :func:`encode_for_wan`)."""
    source = _streamable(data, syntax)
    if source is None:
        return None
    ds, pixels = source
    rows = int(pixels.shape[0])
    head_rows = max(MIN_STREAMED_ROWS, round(rows * HEAD_FRACTION))
    try:
        with tolerant_reading():
            own = _jpegls_codestream(ds, pixels[:head_rows])
            keep = len(own) - HEAD_TAIL_MARGIN
            fragment = _with_height(own, rows)[: keep - keep % 2]
            ds.file_meta.TransferSyntaxUID = JPEG_LS_LOSSLESS
            ds.PixelData = _item(b"") + _item(fragment)  # empty Basic Offset Table: one frame
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            buffer = io.BytesIO()
            pydicom.dcmwrite(
                buffer, ds, implicit_vr=False, little_endian=True, enforce_file_format=True
            )
    except Exception:  # the whole-file encoding will say why, if it fails too
        logger.debug("no streamed head", exc_info=True)
        return None
    written = buffer.getvalue()
    if not written.endswith(_SEQUENCE_DELIMITER) or len(fragment) < len(own) // 2:
        return None
    return StreamHead(written[: -len(_SEQUENCE_DELIMITER)], fragment, len(data))


def encode_codestream_for_wan(data: bytes, *, syntax: str = JPEG_LS_LOSSLESS) -> bytes | None:
    """The JPEG-LS codestream of *data*'s whole image (see :func:`encode_head_for_wan`), or
    None when the streamed encoding does not apply."""
    source = _streamable(data, syntax)
    if source is None:
        return None
    ds, pixels = source
    try:
        with tolerant_reading():
            return _jpegls_codestream(ds, pixels)
    except Exception:
        logger.debug("no streamed codestream", exc_info=True)
        return None


def join_streamed(head: StreamHead, codestream: bytes) -> TranscodeResult:
    """The whole file: *head*, then the rest of *codestream* as the frame's second fragment.

    Not verified (``reason`` is :data:`UNVERIFIED`). Raises ValueError when *codestream* does
    not begin with the head's fragment (then the bytes already sent are not part of it).
    """
    if not codestream.startswith(head.fragment):
        raise ValueError("The whole image's codestream does not begin with the streamed head.")
    rest = codestream[len(head.fragment) :]
    if len(rest) % 2:
        rest += b"\x00"  # PS3.5 A.4: fragments have an even length; decoders ignore it
    data = head.data + _item(rest) + _SEQUENCE_DELIMITER
    return TranscodeResult(
        data=data,
        transfer_syntax_uid=JPEG_LS_LOSSLESS,
        transcoded=True,
        original_size=head.original_size,
        size=len(data),
        reason=UNVERIFIED,
    )


def verify_for_wan(
    original: bytes, encoded: bytes, *, syntax: str = JPEG_LS_LOSSLESS
) -> str | None:
    """The second half of :func:`transcode_for_wan`: None if *encoded* re-reads, decodes to
    exactly the pixels of *original* and keeps every other element; otherwise the reason."""
    target = UID(syntax)
    try:
        reference = read_part10(original)  # not modified: decoded and compared as read
        with tolerant_reading():
            pixels = pydicom_pixel_array(reference, raw=True)
    except Exception as exc:
        return f"Verification failed: the original does not decode ({exc})."
    # The result must re-read, decode to the same pixels and keep the rest.
    try:
        result = read_part10(encoded)
        with tolerant_reading():
            same_pixels = _frames_equal(pixels, result)
    except Exception as exc:
        return f"Verification failed: the result does not decode ({exc})."
    if not same_pixels:
        return "Verification failed: the decoded pixels differ."
    try:
        with tolerant_reading():
            differences = _non_pixel_differences(reference, result)
    except Exception as exc:
        return f"Verification failed: elements cannot be compared ({exc})."
    if differences:
        return f"Verification failed: elements changed: {', '.join(differences[:5])}."
    if result.file_meta.TransferSyntaxUID != target:
        return "Verification failed: the Transfer Syntax UID is wrong."
    return None


def warm_up_instance() -> bytes:
    """A small native image (64x64, 16 bits, secondary capture) as Part-10 bytes.

    Transcoding it once in each new worker process loads the codecs and pydicom's pixel
    handlers there, so the first real instance does not wait for that (about a second).
    """
    ds = Dataset()
    ds.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(64 * 64, dtype="<u2") % 64).tobytes()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def decode_frame(data: bytes | Dataset, frame: int = 0) -> np.ndarray[Any, Any]:
    """Decode one frame of Part-10 bytes (or a dataset) to raw samples (no colour conversion).

    Raises :class:`~imaging_hub.errors.InvalidDicomError` for unreadable data, missing Pixel
    Data or an out-of-range frame.
    """
    ds = read_part10(data) if isinstance(data, bytes | bytearray) else data
    if PIXEL_DATA not in ds:
        raise InvalidDicomError("The instance has no Pixel Data.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise InvalidDicomError(f"Frame {frame} is out of range; the instance has {frames}.")
    try:
        with tolerant_reading():
            return pydicom_pixel_array(ds, index=frame, raw=True)
    except Exception as exc:
        raise InvalidDicomError(f"The Pixel Data could not be decoded ({exc}).") from exc


def pixels_equal(a: bytes, b: bytes) -> bool:
    """Whether two Part-10 files decode to identical pixel arrays, frame by frame.

    Samples are compared raw (no colour-space conversion), so a file and its lossless
    transcode compare equal. Raises :class:`~imaging_hub.errors.InvalidDicomError` if either
    cannot be read.
    """
    ds_a, ds_b = read_part10(a), read_part10(b)
    if PIXEL_DATA not in ds_a or PIXEL_DATA not in ds_b:
        return PIXEL_DATA not in ds_a and PIXEL_DATA not in ds_b
    frames_a = int(ds_a.get("NumberOfFrames", 1) or 1)
    frames_b = int(ds_b.get("NumberOfFrames", 1) or 1)
    if frames_a != frames_b:
        return False
    try:
        with tolerant_reading():
            pairs = zip(iter_pixels(ds_a, raw=True), iter_pixels(ds_b, raw=True), strict=True)
            return all(np.array_equal(x, y) for x, y in pairs)
    except Exception as exc:
        raise InvalidDicomError(f"The Pixel Data could not be decoded ({exc}).") from exc
