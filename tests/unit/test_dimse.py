"""dicom.dimse: the C-STORE request the gateway decodes and the response it encodes, checked
against pynetdicom's own decoder and encoder."""

import struct
import warnings
from io import BytesIO
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from imaging_hub.dicom.dimse import (
    StoreRequest,
    p_data_tf,
    parse_store_request,
    store_response_command,
)


def _pynetdicom(message_id: int, sop_class: str, instance: str, status: int) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 0))
    ((context_id, pdv),) = pdata.presentation_data_value_list
    assert context_id == 1 and pdv[:1] == b"\x03"  # the last (only) command fragment
    return bytes(pdv[1:])


# A typical generated UID, fixed: parameters must be the same in every pytest-xdist worker.
TYPICAL_UID = "1.2.826.0.1.3680043.8.498.26032996206823710201205287271025034501"


@pytest.mark.parametrize(
    "sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"]
)  # even and odd lengths
@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", TYPICAL_UID, "9" * 64])
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000, 0x0110, 0xB000])
@pytest.mark.parametrize("message_id", [1, 2, 255, 65535])
def test_store_response_matches_pynetdicom(
    sop_class: str, instance: str, status: int, message_id: int
) -> None:
    ours = store_response_command(
        message_id=message_id, sop_class_uid=sop_class, sop_instance_uid=instance, status=status
    )
    assert ours == _pynetdicom(message_id, sop_class, instance, status)


def _store_request_command(
    *,
    message_id: int = 7,
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    instance: str = "1.2.3.4",
    priority: int = 0,
    move_originator: tuple[str, int] | None = None,
) -> bytes:
    """A C-STORE-RQ's Command Set as pynetdicom encodes it."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.Priority = priority
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    if move_originator is not None:
        primitive.MoveOriginatorApplicationEntityTitle = move_originator[0]
        primitive.MoveOriginatorMessageID = move_originator[1]
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdatas = list(message.encode_msg(1, 0))
    _, pdv = pdatas[0].presentation_data_value_list[0]
    assert pdv[:1] == b"\x03"  # the command in one, last fragment
    return bytes(pdv[1:])


def _decoded_by_pynetdicom(command: bytes) -> Any:
    message = C_STORE_RQ()
    message.command_set = decode(BytesIO(command), True, True)
    message.data_set = BytesIO(b"")
    with warnings.catch_warnings():
        # pynetdicom reads a UID with a leading zero ("1.2.03") with a validation warning; the
        # one UID rule (dicom/uids.py) accepts it everywhere alike. The values are compared.
        warnings.simplefilter("ignore", UserWarning)
        return message.message_to_primitive()


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"])
@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", TYPICAL_UID, "9" * 64])
@pytest.mark.parametrize("priority", [0, 1, 2])
@pytest.mark.parametrize("message_id", [1, 65535])
@pytest.mark.parametrize("move_originator", [None, ("MOVESCU", 12)])
def test_store_request_reads_what_pynetdicom_reads(
    sop_class: str,
    instance: str,
    priority: int,
    message_id: int,
    move_originator: tuple[str, int] | None,
) -> None:
    command = _store_request_command(
        message_id=message_id,
        sop_class=sop_class,
        instance=instance,
        priority=priority,
        move_originator=move_originator,
    )
    theirs = _decoded_by_pynetdicom(command)
    ours = parse_store_request(command)
    assert ours == StoreRequest(
        message_id=theirs.MessageID,
        sop_class_uid=str(theirs.AffectedSOPClassUID),
        sop_instance_uid=str(theirs.AffectedSOPInstanceUID),
        priority=theirs.Priority,
    )
    assert parse_store_request(memoryview(command)) == ours


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _echo_request() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 0))
    return bytes(pdata.presentation_data_value_list[0][1][1:])


GOOD = _store_request_command()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"", id="empty"),
        pytest.param(_echo_request(), id="C-ECHO-RQ"),
        pytest.param(GOOD[:-3], id="cut inside the last value"),
        pytest.param(GOOD[:-20], id="cut inside an element header"),
        pytest.param(GOOD + _element(0x0600, b"XX"), id="an element not of C-STORE-RQ"),
        pytest.param(
            GOOD.replace(b"\x00\x00\x00\x01", b"\x00\x00\x20\x01", 1), id="Command Field 0120"
        ),
        pytest.param(
            GOOD.replace(b"\x00\x08\x02\x00\x00\x00\x01\x00", b"\x00\x08\x02\x00\x00\x00\x01\x01"),
            id="no data set",
        ),
        pytest.param(
            GOOD.replace(b"\x00\x07\x02\x00\x00\x00\x00\x00", b"\x00\x07\x02\x00\x00\x00\x03\x00"),
            id="priority 3",
        ),
        pytest.param(GOOD.replace(b"1.2.3.4", b"1.2.3/4"), id="not a UID"),
        pytest.param(GOOD.replace(b"1.2.3.4", b"1.2.03."), id="a UID with a leading zero"),
        pytest.param(
            GOOD.replace(b"\x00\x07\x02\x00\x00\x00", b"\x00\x07\x04\x00\x00\x00"),
            id="US of 4 bytes",
        ),
        pytest.param(
            _element(0x0002, b"1.2\x00") + GOOD[12:], id="without group length, class first"
        ),
        pytest.param(GOOD[:12] + _element(0x1000, b"1.2.3.4\x00") + GOOD[12:], id="out of order"),
        pytest.param(b"\x02\x00" + GOOD[2:], id="group 0002"),
        pytest.param(GOOD[:4] + b"\xff\xff\xff\xff" + GOOD[8:], id="length past the end"),
    ],
)
def test_anything_but_a_plain_store_request_is_left_to_pynetdicom(command: bytes) -> None:
    assert parse_store_request(command) is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(command: bytes) -> None:
    parse_store_request(command)


@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_a_changed_byte_either_reads_as_pynetdicom_reads_it_or_is_refused(
    position: int, byte: int
) -> None:
    command = bytearray(GOOD)
    command[position] = byte
    ours = parse_store_request(bytes(command))
    if ours is None:
        return
    theirs = _decoded_by_pynetdicom(bytes(command))
    assert (ours.message_id, ours.priority) == (theirs.MessageID, theirs.Priority)
    assert ours.sop_class_uid == str(theirs.AffectedSOPClassUID)
    assert ours.sop_instance_uid == str(theirs.AffectedSOPInstanceUID)


@pytest.mark.parametrize("command", [b"", b"\x00" * 61, GOOD])
@pytest.mark.parametrize("context_id", [1, 255])
def test_p_data_tf_is_the_pdu_pynetdicom_encodes(command: bytes, context_id: int) -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, b"\x03" + command))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert p_data_tf(context_id, command) == pdu.encode()
