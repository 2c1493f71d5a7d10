"""The DUL's P-DATA reader: PDUs read in one buffer, their values handed on as views.

Relies on pynetdicom 3.0 internals (see :mod:`imaging_hub.dicom_gateway.lean`).
"""

import logging
import socket
from typing import TYPE_CHECKING, Any

from pynetdicom import evt

from imaging_hub.dicom.dimse import P_DATA_TF

if TYPE_CHECKING:
    from imaging_hub.dicom_gateway.lean.store import LeanStore

log = logging.getLogger(__name__)

#: Largest buffer allocated before the bytes are there: a PDU header may claim up to 4 GiB.
RECV_CHUNK = 4 * 1024 * 1024


def recv_exact(peer: socket.socket, nr_bytes: int) -> bytearray:
    """Read *nr_bytes* (fewer only if the peer closes) into one buffer.

    Replaces pynetdicom's AssociationSocket.recv, which reads 4 KiB per call and extends a
    bytearray each time: 130 Python-level reads per 0.5 MB CT slice. Same contract: returns
    what was read, short when the connection closed; OSError/TimeoutError propagate. The
    buffer grows by RECV_CHUNK at most ahead of what arrived, so a hostile length field costs
    no memory the peer does not fill.
    """
    buffer = bytearray(min(nr_bytes, RECV_CHUNK))
    read = 0
    while read < nr_bytes:
        if read == len(buffer):
            buffer.extend(bytes(min(nr_bytes - read, RECV_CHUNK)))
        with memoryview(buffer) as view:
            count = peer.recv_into(view[read:])
        if not count:
            break
        read += count
    if read < len(buffer):
        del buffer[read:]
    return buffer


ESTABLISHED = "Sta6"  # PS3.8 9.2: Association established and ready for data transfer


def read_pdu(dul: Any, read_pdu_data: Any, peer: socket.socket, lean: "LeanStore") -> None:
    """DULServiceProvider._read_pdu_data, with P-DATA-TF PDUs of an established association
    handed straight to DIMSE.

    In state Sta6 a P-DATA-TF PDU leads to DT-2 (PS3.8 9.2.2), which passes its presentation
    data values to DIMSE and stays in Sta6. pynetdicom gets there through a copy of the whole
    PDU, a decoded PDU object with a copy of each value, a state-machine event on a queue and a
    primitive: about 90 us and three copies per 128 KiB. Here the values go on as views of the
    PDU as read, to `LeanStore` (plain C-STORE requests) or to ``dimse.receive_primitive``
    (what DT-2 calls). Any other PDU, any other state, pending events or bound PDU/data event
    handlers (pynetdicom's debug logging) take pynetdicom's path; TLS associations keep it
    throughout (`attach`).
    """
    if (
        dul.state_machine.current_state != ESTABLISHED
        or not dul.event_queue.empty()
        or not dul._recv_pdu.empty()
        or dul.assoc.get_handlers(evt.EVT_DATA_RECV)
        or dul.assoc.get_handlers(evt.EVT_PDU_RECV)
    ):
        read_pdu_data()
        return
    try:
        header = peer.recv(6, socket.MSG_PEEK)
    except OSError:
        header = b""
    if len(header) < 6 or header[0] != P_DATA_TF:
        read_pdu_data()
        return
    length = int.from_bytes(header[2:6], "big")
    try:
        pdu = recv_exact(peer, 6 + length)
    except (OSError, TimeoutError):
        pdu = bytearray()
    if len(pdu) != 6 + length:
        log.error("Connection closed before the entire PDU was received")
        dul.event_queue.put("Evt17")  # transport connection closed, as pynetdicom
        return
    values: list[tuple[int, memoryview]] = []
    view = memoryview(pdu)  # each value a view of the PDU, not a copy
    offset = 6
    while offset < len(pdu):
        item_length = int.from_bytes(view[offset : offset + 4], "big")
        end = offset + 4 + item_length
        if offset + 6 > len(pdu) or item_length < 2 or end > len(pdu):
            log.error("Invalid presentation data value item in a P-DATA-TF PDU")
            dul.event_queue.put("Evt19")  # unrecognised or invalid PDU, as pynetdicom
            return
        values.append((pdu[offset + 4], view[offset + 5 : end]))
        offset = end
    lean.receive(values)
