"""Plain C-STORE requests served on the association's DUL thread, and direct responses.

Relies on pynetdicom 3.0 internals (see :mod:`imaging_hub.dicom_gateway.lean`).
"""

import logging
from typing import Any, Protocol

from pynetdicom import evt
from pynetdicom import sop_class as pynetdicom_sop_class
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass

from imaging_hub.dicom.dimse import (
    COMMAND_FRAGMENT,
    COMMAND_LAST,
    LAST_FRAGMENT,
    StoreRequest,
    p_data_tf,
    parse_store_request,
    store_response_command,
)
from imaging_hub.dicom.dimse import HANDLER_FAILED as STATUS_HANDLER_FAILED

log = logging.getLogger(__name__)


class StoreTarget(Protocol):
    """What the lean path needs of the gateway's C-STORE handler (scp.StoreHandler)."""

    max_instance_bytes: int

    def handle_store(self, event: Any) -> int: ...

    def refuse_oversized(self, calling: str, size: int) -> int: ...

    def store(
        self,
        dataset: bytes,
        *,
        calling: str,
        association: int,
        abstract_syntax: str,
        transfer_syntax_uid: str,
        sop_class_uid: str,
        sop_instance_uid: str,
    ) -> int: ...


def send_msg(dimse: Any, send_msg: Any, primitive: Any, context_id: int) -> None:
    """DIMSEServiceProvider.send_msg, with plain C-STORE responses encoded directly.

    A response without Error Comment or Offending Element (every Success, most refusals) is
    encoded by `store_response_command` into one P-DATA, as pynetdicom would send it when its
    maximum PDU size allows. Anything else, or an association with EVT_DIMSE_SENT handlers
    (pynetdicom's debug logging binds one), goes through pynetdicom's encoder.
    """
    if (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
        and primitive.Status is not None
        and not dimse.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        command = store_response_command(
            message_id=primitive.MessageIDBeingRespondedTo,
            sop_class_uid=str(primitive.AffectedSOPClassUID or ""),
            sop_instance_uid=str(primitive.AffectedSOPInstanceUID or ""),
            status=primitive.Status,
        )
        if fits_one_pdu(dimse, command):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, bytes([COMMAND_LAST]) + command))
            dimse.dul.send_pdu(pdata)
            return
    send_msg(primitive, context_id)


def fits_one_pdu(dimse: Any, command: bytes) -> bool:
    """Whether *command* fits one PDV in a PDU the peer accepts (its maximum PDU length
    counts the PDV item: length, context ID and control header, 6 bytes, then the value)."""
    limit = dimse.maximum_pdu_size
    return not limit or len(command) + 6 <= limit


class LeanStore:
    """The plain C-STORE requests of one association, served on its DUL thread.

    Through pynetdicom, every C-STORE crosses two threads: the DUL thread decodes the command
    into a pydicom Dataset and a primitive and queues it; the association thread wakes, builds
    an event and a response primitive, runs the handler, and queues the response back to the
    DUL thread, which wakes to send it. For the request a modality sends thousands of times, a
    C-STORE-RQ whose command `parse_store_request` reads, this serves it where its data
    arrives: the data set's fragments are kept as views of the PDUs as read and joined once,
    `StoreHandler.store` runs on the DUL thread (the peer waits for the answer anyway), and the
    response goes out at once (`p_data_tf`).

    Everything else goes to pynetdicom's DIMSE as before, values unchanged: other commands, a
    command in several fragments, a request pynetdicom would dispatch differently (a context
    not accepted, a SOP class not of the Storage service, SOP Class Common Extended
    Negotiation), and associations with DIMSE or data event handlers bound (pynetdicom's debug
    logging). A data set that stops looking like one (a command fragment or another context
    in the middle) is handed to pynetdicom whole, with everything received so far, and pynetdicom
    answers it as it always did. A data set past the size limit is no longer kept: its
    fragments are counted, dropped, and the request refused once it is complete.
    """

    def __init__(self, handler: StoreTarget, assoc: Any) -> None:
        self.handler = handler
        self.assoc = assoc
        self.request: StoreRequest | None = None
        self.context_id = 0
        self.pdvs: list[memoryview] = []  # the command's and the data set's values so far
        self.size = 0  # bytes of data set received
        self.oversized = False
        self.passthrough = False  # the message in progress is pynetdicom's

    def receive(self, values: list[tuple[int, memoryview]]) -> None:
        for context_id, pdv in values:
            if self.request is None and not self.passthrough:
                if self._start(context_id, pdv):
                    continue
                self.passthrough = True
            if self.passthrough:
                self._pass_on([(context_id, pdv)])
                continue
            if pdv[0] & COMMAND_FRAGMENT or context_id != self.context_id:
                self._hand_over(context_id, pdv)
                continue
            self.size += len(pdv) - 1
            if not self.oversized:
                if self.size > self.handler.max_instance_bytes:
                    self.oversized = True
                    self.pdvs = self.pdvs[:1]
                else:
                    self.pdvs.append(pdv)
            if pdv[0] & LAST_FRAGMENT:
                self._complete()

    def _start(self, context_id: int, pdv: memoryview) -> bool:
        """Take a new message on if it is a plain C-STORE-RQ command this can serve."""
        assoc = self.assoc
        if pdv[0] != COMMAND_LAST or assoc.dimse.message is not None:
            return False
        request = parse_store_request(pdv[1:])
        if (
            request is None
            or context_id not in assoc._accepted_cx
            or assoc.acceptor.accepted_common_extended
            or not assoc.is_established
            or assoc._sent_release
            or assoc.get_handlers(evt.EVT_C_STORE) != (self.handler.handle_store, None)
            or any(assoc.get_handlers(event) for event in LEAN_BLOCKING_EVENTS)
            or pynetdicom_sop_class.uid_to_service_class(request.sop_class_uid)
            is not StorageServiceClass
        ):
            return False
        self.request = request
        self.context_id = context_id
        self.pdvs = [pdv]
        self.size = 0
        self.oversized = False
        return True

    def _hand_over(self, context_id: int, pdv: memoryview) -> None:
        """Give the message in progress to pynetdicom (it decides what it is)."""
        kept = [(self.context_id, value) for value in self.pdvs]
        oversized = self.oversized
        self.request, self.pdvs = None, []
        if oversized:  # what was dropped cannot be handed over: end as pynetdicom would
            log.error("Invalid DIMSE message: a C-STORE data set past the size limit broke off")
            self.assoc.dul.event_queue.put("Evt19")
            return
        self._pass_on([*kept, (context_id, pdv)])

    def _pass_on(self, values: list[tuple[int, Any]]) -> None:
        """Give *values* to pynetdicom's DIMSE, as DT-2 does (one P-DATA); what follows is
        pynetdicom's too until it has the whole message."""
        dimse = self.assoc.dimse
        primitive = P_DATA()
        primitive.presentation_data_value_list.extend(values)
        dimse.receive_primitive(primitive)
        self.passthrough = dimse.message is not None

    def _complete(self) -> None:
        request, context_id, pdvs = self.request, self.context_id, self.pdvs
        assert request is not None
        self.request, self.pdvs = None, []
        assoc = self.assoc
        context = assoc._accepted_cx[context_id].as_tuple  # as pynetdicom's event has it
        calling = assoc.requestor.ae_title
        try:
            if self.oversized:
                status = self.handler.refuse_oversized(calling, self.size)
            else:
                dataset = b"".join([value[1:] for value in pdvs[1:]])
                del pdvs
                status = self.handler.store(
                    dataset,
                    calling=calling,
                    association=id(assoc),
                    abstract_syntax=str(context.abstract_syntax),
                    transfer_syntax_uid=str(context.transfer_syntax),
                    sop_class_uid=request.sop_class_uid,
                    sop_instance_uid=request.sop_instance_uid,
                )
        except Exception:
            # As pynetdicom answers when the EVT_C_STORE handler raises.
            log.exception("C-STORE from %s: the handler failed", calling)
            status = STATUS_HANDLER_FAILED
        if not assoc.is_established:
            return  # aborted meanwhile: nothing to answer
        command = store_response_command(
            message_id=request.message_id,
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            status=status,
        )
        if not fits_one_pdu(assoc.dimse, command):  # a peer with a tiny PDU: pynetdicom fragments
            response = C_STORE()
            response.MessageIDBeingRespondedTo = request.message_id
            response.AffectedSOPClassUID = request.sop_class_uid
            response.AffectedSOPInstanceUID = request.sop_instance_uid
            response.Status = status
            assoc.dimse.send_msg(response, context_id)
            return
        assoc.dul.socket.send(p_data_tf(context_id, command))


#: Events whose handlers see DIMSE messages or raw data: bound, pynetdicom serves every request.
LEAN_BLOCKING_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_DATA_SENT)
