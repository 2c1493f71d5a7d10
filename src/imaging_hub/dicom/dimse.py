"""DIMSE command sets the gateway encodes itself (PS3.7 9.3.1.2, PS3.5 7.1.3).

pynetdicom builds each response's Command Set through a pydicom Dataset with a validated UID
object per element and pydicom's writer: about 0.3 ms for the few dozen bytes of a C-STORE
response, on every instance received. The one response the gateway sends per instance is
encoded here directly; ``tests/unit/test_dimse.py`` checks it byte for byte against
pynetdicom's own encoder.
"""

import struct

C_STORE_RSP = 0x8001  # Command Field (PS3.7 E.1)
NO_DATA_SET = 0x0101  # Command Data Set Type: no data set follows


def _element(element: int, value: bytes) -> bytes:
    """A command element of group 0000, Implicit VR Little Endian (PS3.5 7.1.3)."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def store_response_command(
    *, message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int
) -> bytes:
    """The Command Set of a C-STORE-RSP without Error Comment or Offending Element.

    Elements in tag order: Command Group Length, Affected SOP Class UID, Command Field,
    Message ID Being Responded To, Command Data Set Type, Status, Affected SOP Instance UID.
    The UIDs must be ASCII (the request's, as received and checked by the caller).
    """
    body = b"".join(
        (
            _element(0x0002, _uid(sop_class_uid)),
            _element(0x0100, _us(C_STORE_RSP)),
            _element(0x0120, _us(message_id)),
            _element(0x0800, _us(NO_DATA_SET)),
            _element(0x0900, _us(status)),
            _element(0x1000, _uid(sop_instance_uid)),
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body
