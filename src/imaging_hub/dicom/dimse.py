"""DIMSE command sets the gateway decodes and encodes itself (PS3.7 9.3.1, PS3.5 7.1.3).

pynetdicom decodes each request's Command Set into a pydicom Dataset and a primitive whose
every UID is validated again, and builds each response through a pydicom Dataset and
pydicom's writer: a few hundred microseconds for the few dozen bytes of a C-STORE request and
its response, on every instance received. The plain C-STORE request (`parse_store_request`)
and its response (`store_response_command`, `p_data_tf`) are handled here directly; anything
else is left to pynetdicom. ``tests/unit/test_dimse.py`` checks both against pynetdicom's own
decoder and encoder.
"""

import struct
from dataclasses import dataclass

from imaging_hub.dicom.uids import is_valid_uid

# DIMSE status codes (PS3.4 B.2.3, PS3.7 C), also the Failure Reasons of STOW-RS (PS3.18).
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
HANDLER_FAILED = 0xC211  # what pynetdicom answers when a C-STORE handler raises

C_STORE_RQ = 0x0001  # Command Field (PS3.7 E.1)
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101  # Command Data Set Type: no data set follows
P_DATA_TF = 0x04  # PDU type (PS3.8 9.3.5)
# Message Control Header bits of a presentation data value (PS3.8 E.2).
COMMAND_FRAGMENT = 0x01  # set: Command Set; clear: Data Set
LAST_FRAGMENT = 0x02
COMMAND_LAST = COMMAND_FRAGMENT | LAST_FRAGMENT

# Command elements of a C-STORE-RQ (PS3.7 9.3.1.1), by element number of group 0000.
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_PRIORITY = 0x0700
_DATA_SET_TYPE = 0x0800
_AFFECTED_SOP_INSTANCE = 0x1000
_MOVE_ORIGINATOR_AE = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031
_STORE_RQ_REQUIRED = frozenset(
    {
        _AFFECTED_SOP_CLASS,
        _COMMAND_FIELD,
        _MESSAGE_ID,
        _PRIORITY,
        _DATA_SET_TYPE,
        _AFFECTED_SOP_INSTANCE,
    }
)
_STORE_RQ_OPTIONAL = frozenset({_GROUP_LENGTH, _MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID})
_US_ELEMENTS = frozenset(
    {_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE, _MOVE_ORIGINATOR_ID}
)
_ELEMENT_HEADER = struct.Struct("<HHI")


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """A C-STORE-RQ's command (PS3.7 9.1.1.1): what the SCP needs to store and answer it."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int


def _parse_uid(value: bytes) -> str | None:
    text = value.rstrip(b"\x00 ")
    if not 0 < len(text) <= 64 or not text.isascii():
        return None
    uid = text.decode("ascii")
    return uid if is_valid_uid(uid) else None


def parse_store_request(command: bytes | memoryview) -> StoreRequest | None:
    """The C-STORE-RQ in a complete Command Set (Implicit VR Little Endian), or None.

    None for anything that is not a plain, well-formed C-STORE request with a data set: another
    command, an element out of order or not of the C-STORE-RQ, a length that does not fit, a
    UID that is not valid. The caller leaves such a command to pynetdicom, which decides what
    it means (its own answer or an abort), exactly as before.
    """
    values: dict[int, bytes] = {}
    offset = 0
    last_element = -1
    size = len(command)
    while offset < size:
        if offset + 8 > size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(command, offset)
        offset += 8
        if group != 0 or element <= last_element or length > size - offset:
            return None
        if element not in _STORE_RQ_REQUIRED and element not in _STORE_RQ_OPTIONAL:
            return None
        if element in _US_ELEMENTS and length != 2:
            return None
        values[element] = bytes(command[offset : offset + length])
        offset += length
        last_element = element
    if not values.keys() >= _STORE_RQ_REQUIRED:
        return None
    us = {
        element: int.from_bytes(values[element], "little")
        for element in _US_ELEMENTS & values.keys()
    }
    if us[_COMMAND_FIELD] != C_STORE_RQ or us[_DATA_SET_TYPE] == NO_DATA_SET:
        return None
    if us[_PRIORITY] not in (0, 1, 2):  # MEDIUM, HIGH, LOW (PS3.7 9.1.1.1.1)
        return None
    sop_class_uid = _parse_uid(values[_AFFECTED_SOP_CLASS])
    sop_instance_uid = _parse_uid(values[_AFFECTED_SOP_INSTANCE])
    if sop_class_uid is None or sop_instance_uid is None:
        return None
    return StoreRequest(
        message_id=us[_MESSAGE_ID],
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        priority=us[_PRIORITY],
    )


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


def p_data_tf(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying one whole Command Set in one PDV (PS3.8 9.3.5, E.2)."""
    item = struct.pack(">IBB", 2 + len(command), context_id, COMMAND_LAST) + command
    return struct.pack(">BBI", P_DATA_TF, 0, len(item)) + item
