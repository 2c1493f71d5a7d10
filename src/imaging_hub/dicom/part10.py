"""DICOM File Format (PS3.10 7.1) around a data set received on the network.

The gateway spools what arrives by C-STORE as Part-10 files: a 128-byte preamble, ``DICM``,
the File Meta Information (group 0002, always Explicit VR Little Endian, PS3.10 7.1) and the
data set's bytes exactly as received. pynetdicom builds the same header through a pydicom
FileMetaDataset, with a validated UID object per element; that cost about 0.3 ms per instance,
so the header is encoded here directly. ``tests/unit/test_part10.py`` checks it byte for byte
against pynetdicom's own encoder.
"""

import struct

PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = b"\x00\x01"  # File Meta Information Version (0002,0001)


def _short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One element with a 2-byte length (PS3.5 7.1.2, Table 7.1-2)."""
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _even(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_bytes(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_uid: str,
    implementation_version: str,
) -> bytes:
    """The encoded File Meta Information group, (0002,0000) to (0002,0013).

    UIDs are padded with NUL and the version name with a space to an even length (PS3.5 6.2).
    The values must be ASCII (UIDs are checked by the caller; the version name is ours).
    """
    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, len(_VERSION)) + _VERSION,
            _short(0x0002, 0x0002, b"UI", _even(sop_class_uid, b"\x00")),
            _short(0x0002, 0x0003, b"UI", _even(sop_instance_uid, b"\x00")),
            _short(0x0002, 0x0010, b"UI", _even(transfer_syntax_uid, b"\x00")),
            _short(0x0002, 0x0012, b"UI", _even(implementation_uid, b"\x00")),
            _short(0x0002, 0x0013, b"SH", _even(implementation_version, b" ")),
        )
    )
    return struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def part10_header(**file_meta: str) -> bytes:
    """Preamble, prefix and File Meta Information (see :func:`file_meta_bytes`): what goes
    before the data set in a Part-10 file."""
    return PREAMBLE + file_meta_bytes(**file_meta)


def part10_bytes(dataset: bytes, **file_meta: str) -> bytes:
    """A whole Part-10 file: :func:`part10_header` and *dataset*."""
    return b"".join((part10_header(**file_meta), dataset))
