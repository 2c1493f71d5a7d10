"""Frames, transfer syntaxes and media types for WADO-RS (PS3.18 8.7.3, Table 8.7.3-2).

- :func:`read_frames` takes frames out of a stored Part-10 file: native frames are read at
  their offset without reading the rest of the Pixel Data; encapsulated frames are returned
  as their compressed bitstream (PS3.5 A.4) or decoded to native little endian samples.
- :func:`convert_instance` re-encodes a whole instance in Explicit or Implicit VR Little
  Endian (decompressing it) when a client asks for an uncompressed syntax.
- :data:`MEDIA_TYPES` maps compressed transfer syntaxes to their single-frame media types.
"""

import io
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import get_expected_length, pack_bits
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from imaging_hub.dicom.transcode import decode_frame, read_part10, tolerant_reading
from imaging_hub.errors import InvalidDicomError, NotAcceptable, NotFound

__all__ = [
    "MEDIA_TYPES",
    "UNCOMPRESSED",
    "FrameLayout",
    "FrameLayoutCache",
    "FrameSet",
    "can_convert",
    "convert_instance",
    "frame_layout",
    "read_frames",
    "read_header",
    "read_native_frame",
]

PIXEL_DATA = 0x7FE00010

#: Uncompressed syntaxes: frames are read directly from the Pixel Data value.
UNCOMPRESSED = frozenset(
    {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)

#: Single-frame media types of compressed syntaxes (PS3.18 Table 8.7.3-5).
MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}

#: Syntaxes an instance can be converted to on request (by decompressing).
CONVERTIBLE_TARGETS = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


@dataclass(frozen=True)
class FrameSet:
    """Frames taken from one instance, with the transfer syntax they are encoded in."""

    frames: list[bytes]
    transfer_syntax_uid: str

    @property
    def media_type(self) -> str:
        """``application/octet-stream`` for native samples, else the compressed media type."""
        return MEDIA_TYPES.get(self.transfer_syntax_uid, "application/octet-stream")


def _decodable(ts: str) -> bool:
    if ts in UNCOMPRESSED:
        return True
    try:
        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_convert(stored: str, target: str) -> bool:
    """Whether an instance stored in *stored* can be sent in *target* (same or decompressed)."""
    return stored == target or (target in CONVERTIBLE_TARGETS and _decodable(stored))


def convert_instance(data: bytes, target: str) -> bytes:
    """Re-encode a Part-10 instance in *target* (Explicit/Implicit VR Little Endian).

    Compressed Pixel Data is decompressed (colour YBR pixels become RGB, as pydicom's decoders
    deliver them; Photometric Interpretation follows). Raises NotAcceptable when the instance
    cannot be represented in *target*, InvalidDicomError when it cannot be read.
    """
    if target not in CONVERTIBLE_TARGETS:
        raise NotAcceptable(f"Instances cannot be converted to transfer syntax {target}.")
    ds = read_part10(data)
    stored = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if stored == target:
        return data
    for tag in [t for t in ds.keys() if t.group == 0xFFFE]:  # noqa: SIM118
        del ds[tag]  # stray item/delimiter tags some modalities leave after Pixel Data
    try:
        with tolerant_reading():
            if "PixelData" in ds and UID(stored).is_compressed:
                ds.decompress()
            ds.file_meta.TransferSyntaxUID = UID(target)
            out = io.BytesIO()
            pydicom.dcmwrite(
                out,
                ds,
                implicit_vr=target == ImplicitVRLittleEndian,
                little_endian=True,
                enforce_file_format=True,
            )
    except Exception as exc:  # decoders and writers raise many types on odd data
        raise NotAcceptable(
            f"The instance cannot be converted from {stored or 'its syntax'} to {target} "
            f"({type(exc).__name__}); ask for transfer-syntax=* to get it as stored."
        ) from exc
    return out.getvalue()


def _seekable(stream: BinaryIO) -> BinaryIO:
    try:
        if stream.seekable():
            return stream
    except (AttributeError, OSError):
        pass
    return io.BytesIO(stream.read())


def read_header(stream: BinaryIO) -> Dataset:
    """Parse a stored instance's header, deferring large values (Pixel Data is never read)."""
    fp = _seekable(stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, defer_size=4096, force=True)
    except Exception as exc:  # hostile or damaged stored bytes
        raise InvalidDicomError("The stored instance is not a readable DICOM file.") from exc
    return ds


def _frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _check_numbers(numbers: Sequence[int], count: int) -> None:
    """NotFound for a frame number the instance does not have: the request names a resource
    that does not exist (the stored data is fine)."""
    for number in numbers:
        if not 1 <= number <= count:
            raise NotFound(f"Frame {number} does not exist; the instance has {count} frame(s).")


def read_frames(stream: BinaryIO, numbers: Sequence[int], *, decode: bool) -> FrameSet:
    """Frames *numbers* (1-based, PS3.18 8.3.5) of the Part-10 file in *stream*.

    With *decode* false, compressed frames come back as stored (their bitstream) and native
    frames as stored little endian bytes. With *decode* true every frame is native little
    endian samples (``1.2.840.10008.1.2.1``), decoded if needed, without colour conversion.
    Raises NotFound for frame numbers the instance does not have, InvalidDicomError for
    missing Pixel Data or undecodable data.
    """
    fp = _seekable(stream)
    ds = read_header(fp)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""
    raw = ds._dict.get(Tag(PIXEL_DATA))  # the deferred element: its offset, not its value
    if raw is None:
        raise InvalidDicomError("The instance has no Pixel Data, so it has no frames.")
    count = _frame_count(ds)
    _check_numbers(numbers, count)
    value_tell = getattr(raw, "value_tell", None)
    compressed = ts not in UNCOMPRESSED
    if compressed and decode:
        if not _decodable(ts):
            raise NotAcceptable(
                f"Frames stored in transfer syntax {ts} cannot be decoded here; "
                "ask for the stored syntax (transfer-syntax=*)."
            )
        fp.seek(0)
        full = read_part10(fp.read())
        return FrameSet(
            [_native(decode_frame(full, n - 1)) for n in numbers], ExplicitVRLittleEndian
        )
    if compressed:
        if value_tell is None:
            raise InvalidDicomError("The encapsulated Pixel Data could not be located.")
        fp.seek(value_tell)
        value = fp.read()
        try:
            frames = [get_frame(value, n - 1, number_of_frames=count) for n in numbers]
        except Exception as exc:
            raise InvalidDicomError("The encapsulated Pixel Data is damaged.") from exc
        return FrameSet(frames, ts)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and bits % 8 == 0 and value_tell:
        try:
            size = int(get_expected_length(ds, unit="bytes")) // count
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise InvalidDicomError("The image attributes do not describe the frames.") from exc
        frames = []
        for n in numbers:
            fp.seek(value_tell + (n - 1) * size)
            frame = fp.read(size)
            if len(frame) != size:
                raise InvalidDicomError("The Pixel Data is shorter than its attributes say.")
            frames.append(frame)
        return FrameSet(frames, ExplicitVRLittleEndian)
    # big endian, deflated or 1-bit pixels: decode the whole dataset, then re-pack
    fp.seek(0)
    full = read_part10(fp.read())
    out = []
    for n in numbers:
        arr = decode_frame(full, n - 1)
        out.append(pack_bits(arr) if bits == 1 else _native(arr))
    return FrameSet(out, ExplicitVRLittleEndian)


ITEM = 0xE000FFFE  # (FFFE,E000) read as one little endian 32-bit word: group, then element
SEQUENCE_DELIMITER = 0xE0DDFFFE
UNDEFINED = 0xFFFFFFFF
#: Encapsulated Pixel Data with more items than this is read the general way, never indexed.
MAX_INDEXED_ITEMS = 100_000


@dataclass(frozen=True)
class FrameLayout:
    """Where the frames of one stored Part-10 file lie, so a frame is one ranged read.

    *ranges* holds (offset, length) of each frame as stored: native little endian frames
    (Explicit or Implicit VR, 8/16/32-bit) at ``value offset + n x frame size``; encapsulated
    frames when Pixel Data holds exactly one fragment per frame (PS3.5 A.4), or the one frame
    of a single-frame image in several fragments (a radiograph the gateway streamed): then its
    range spans them all and *pieces* holds each fragment's (offset, length) within that span,
    which :meth:`join` keeps (dropping the item headers between them). ``None`` when frames
    cannot be cut out by range (big endian, deflated, 1-bit, several fragments per frame of a
    multi-frame image): :func:`read_frames` reads those the general way.
    """

    transfer_syntax_uid: str
    count: int
    ranges: tuple[tuple[int, int], ...] | None
    pieces: tuple[tuple[int, int], ...] | None = None

    def join(self, span: bytes) -> bytes:
        """The frame's bytes from what its range read (its fragments' values, joined)."""
        if self.pieces is None:
            return span
        return b"".join(span[offset : offset + length] for offset, length in self.pieces)

    @property
    def native(self) -> bool:
        return self.transfer_syntax_uid in UNCOMPRESSED

    def frame_range(self, number: int) -> tuple[int, int]:
        """(offset, length) of frame *number* (1-based); NotFound if there is none."""
        _check_numbers([number], self.count)
        if self.ranges is None:
            raise InvalidDicomError("The frames of this instance cannot be read by range.")
        return self.ranges[number - 1]


def _native_ranges(ds: Dataset, raw: Any, count: int) -> tuple[tuple[int, int], ...] | None:
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if bits % 8 or getattr(raw, "value_tell", None) is None or raw.length == UNDEFINED:
        return None
    try:
        size = int(get_expected_length(ds, unit="bytes")) // count
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    if size <= 0 or size * count > raw.length:
        return None
    start = int(raw.value_tell)
    return tuple((start + n * size, size) for n in range(count))


def _fragment_layout(
    fp: BinaryIO, start: int, count: int
) -> tuple[tuple[tuple[int, int], ...] | None, tuple[tuple[int, int], ...] | None]:
    """(ranges, pieces) of :class:`FrameLayout` for encapsulated Pixel Data at *start*."""
    fragments = _fragments_after_table(fp, start)
    if fragments is None or not fragments:
        return None, None
    if len(fragments) == count:
        return fragments, None
    if count != 1:
        return None, None
    first = fragments[0][0]
    end = fragments[-1][0] + fragments[-1][1]
    return ((first, end - first),), tuple((offset - first, size) for offset, size in fragments)


def _fragments_after_table(fp: BinaryIO, start: int) -> tuple[tuple[int, int], ...] | None:
    """(offset, length) of each fragment after the Basic Offset Table."""
    fp.seek(start)
    items: list[tuple[int, int]] = []
    while len(items) <= MAX_INDEXED_ITEMS:
        header = fp.read(8)
        if len(header) < 8:
            return None  # no Sequence Delimitation Item
        tag, length = struct.unpack("<II", header)
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM or length == UNDEFINED:
            return None
        items.append((fp.tell(), length))
        fp.seek(length, io.SEEK_CUR)
    else:
        return None
    return tuple(items[1:])  # items[0] is the Basic Offset Table, possibly empty


def frame_layout(stream: BinaryIO) -> FrameLayout:
    """Read a stored instance's header once and locate its frames (see :class:`FrameLayout`).

    Raises InvalidDicomError when the file has no Pixel Data.
    """
    fp = _seekable(stream)
    ds = read_header(fp)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""
    raw = ds._dict.get(Tag(PIXEL_DATA))
    if raw is None:
        raise InvalidDicomError("The instance has no Pixel Data, so it has no frames.")
    count = _frame_count(ds)
    ranges: tuple[tuple[int, int], ...] | None = None
    pieces: tuple[tuple[int, int], ...] | None = None
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ranges = _native_ranges(ds, raw, count)
    elif ts not in UNCOMPRESSED and (value_tell := getattr(raw, "value_tell", None)) is not None:
        ranges, pieces = _fragment_layout(fp, int(value_tell), count)
    return FrameLayout(ts, count, ranges, pieces)


class FrameLayoutCache:
    """A bounded, thread-safe LRU of :class:`FrameLayout` per stored object version.

    Keys name the object *and* its content (object key plus SHA-256), so a replaced object is
    never read with a stale layout. One per process, built at start-up.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], FrameLayout] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: tuple[str, str]) -> FrameLayout | None:
        """The cached layout for *key*, or None (nothing is loaded)."""
        with self._lock:
            return self._entries.get(key)

    def get(self, key: tuple[str, str], load: Callable[[], FrameLayout]) -> FrameLayout:
        """The cached layout for *key*, else ``load()`` (outside the lock), remembered."""
        with self._lock:
            layout = self._entries.get(key)
            if layout is not None:
                self._entries.move_to_end(key)
                return layout
        layout = load()
        with self._lock:
            self._entries[key] = layout
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return layout


def read_native_frame(stream: BinaryIO, frame: int) -> tuple[Dataset, np.ndarray[Any, Any]] | None:
    """(header, samples) of frame *frame* (0-based) of a native little endian grayscale image.

    The header is read whole but Pixel Data is not: only the frame's bytes are read, at their
    offset, and viewed as an array (what pydicom's native decoder would return: unused high
    bits masked, signed values sign-extended). ``None`` when the instance is not such an image
    (compressed, big endian, colour, 1-bit, YBR_422, ...): decode it the general way then.
    """
    fp = _seekable(stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""
            rows, columns = int(ds.Rows), int(ds.Columns)
            bits = int(ds.BitsAllocated)
            stored = int(ds.get("BitsStored", bits) or bits)
            signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            count = _frame_count(ds)
    except Exception:  # anything unusual: the general path decides
        return None
    if (
        ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        or samples != 1
        or bits not in (8, 16)
        or not 1 <= stored <= bits
        or not 0 <= frame < count
    ):
        return None
    start = fp.tell()
    header = fp.read(12)
    if header[:4] != b"\xe0\x7f\x10\x00":
        return None
    if ts == ImplicitVRLittleEndian:
        length, offset = int.from_bytes(header[4:8], "little"), start + 8
    elif header[4:6] in (b"OW", b"OB"):
        length, offset = int.from_bytes(header[8:12], "little"), start + 12
    else:
        return None
    size = rows * columns * bits // 8
    if length == 0xFFFFFFFF or length < size * count:
        return None
    fp.seek(offset + frame * size)
    data = fp.read(size)
    if len(data) != size:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(data, dtype=dtype).reshape(rows, columns)
    if stored < bits:
        if signed:
            shift = bits - stored
            arr = (arr << shift) >> shift
        elif int(arr.max()) >= 1 << stored:
            arr = arr & dtype.type((1 << stored) - 1)
    return ds, arr


def _native(arr: np.ndarray[Any, Any]) -> bytes:
    """Native little endian bytes of a decoded frame."""
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return bytes(np.ascontiguousarray(little).tobytes())
