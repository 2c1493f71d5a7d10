"""DICOM SCP of the gateway (PS3.4 Annex A Verification, Annex B Storage) on pynetdicom.

This is the only module of the gateway that imports pynetdicom. Handlers translate: they call
the domain (``dicom`` for validation, the spool for durability) and map the outcome to a DIMSE
status. Success (0x0000) is answered only after the spool has the instance fsync'd.
"""

import contextlib
import copy
import functools
import logging
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from pydicom.uid import UID
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
    evt,
)
from pynetdicom import _config as pynetdicom_config
from pynetdicom import sop_class as pynetdicom_sop_class
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from imaging_hub.dicom.checks import check_received_dataset
from imaging_hub.dicom.dimse import (
    COMMAND_FRAGMENT,
    COMMAND_LAST,
    LAST_FRAGMENT,
    P_DATA_TF,
    StoreRequest,
    p_data_tf,
    parse_store_request,
    store_response_command,
)
from imaging_hub.dicom.part10 import part10_header
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.errors import InvalidDicomError, SpoolError

log = logging.getLogger(__name__)

# Retired storage SOP classes that old machines still send (PS3.6 A.1, retired entries); every
# current one is in pynetdicom's AllStoragePresentationContexts (170 classes, incl. multi-frame
# US/XA, secondary capture, SR and Encapsulated PDF).
RETIRED_STORAGE_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL Image Storage (Retired)
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Multi-frame Image Storage (Retired)
)

# DIMSE status codes (PS3.4 B.2.3, PS3.7 C).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_HANDLER_FAILED = 0xC211  # what pynetdicom answers when a C-STORE handler raises


class StoreHandler:
    """C-STORE and association events, bound to one spool (no globals)."""

    def __init__(
        self,
        spool: Spool,
        *,
        max_instance_bytes: int,
        on_stored: Any = None,
        on_refused: Any = None,
    ) -> None:
        self.spool = spool
        self.max_instance_bytes = max_instance_bytes
        self.on_stored = on_stored
        self.on_refused = on_refused
        self._touched: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.received = 0
        self.rejected = 0

    def handle_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _refuse(self, status: int) -> int:
        self.rejected += 1
        if self.on_refused is not None:
            self.on_refused()
        return status

    def handle_store(self, event: evt.Event) -> int:
        """EVT_C_STORE: a request that came through pynetdicom's DIMSE layer (TLS, pynetdicom's
        debug logging, or a request `parse_store_request` leaves to pynetdicom)."""
        calling = event.assoc.requestor.ae_title
        try:
            dataset = event.encoded_dataset(include_meta=False)
        except Exception:
            log.warning("C-STORE from %s: dataset could not be encoded", calling)
            return self._refuse(STATUS_CANNOT_UNDERSTAND)
        return self.store(
            dataset,
            calling=calling,
            association=id(event.assoc),
            abstract_syntax=str(event.context.abstract_syntax),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            sop_class_uid=str(getattr(event.request, "AffectedSOPClassUID", "") or ""),
            sop_instance_uid=_affected_uid(event),
        )

    def refuse_oversized(self, calling: str, size: int) -> int:
        log.warning(
            "C-STORE from %s refused: %d bytes exceed the limit of %d",
            calling,
            size,
            self.max_instance_bytes,
        )
        return self._refuse(STATUS_OUT_OF_RESOURCES)

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
    ) -> int:
        """Check and durably spool one received data set; the C-STORE status to answer.

        *dataset* is the data set as received in *transfer_syntax_uid* on a presentation
        context for *abstract_syntax*; *sop_class_uid* and *sop_instance_uid* are the request's
        Affected SOP Class and Instance UIDs; *association* identifies the association (the
        studies it touched are released with it, `handle_closed`).
        """
        started = time.monotonic()
        try:
            header = part10_header(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
                implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
            )
        except Exception:
            log.warning("C-STORE from %s: dataset could not be encoded", calling)
            return self._refuse(STATUS_CANNOT_UNDERSTAND)
        size = len(header) + len(dataset)
        if size > self.max_instance_bytes:
            return self.refuse_oversized(calling, size)
        # The Part-10 file is written synchronously (O_DSYNC) on a spool thread while this
        # thread hashes it and checks the data set (the write and the hash release the GIL):
        # Success comes sooner.
        try:
            staged = self.spool.stage(header, dataset)
        except RuntimeError:  # the spool is closing: the gateway is shutting down
            return STATUS_OUT_OF_RESOURCES
        try:
            checked = check_received_dataset(
                dataset, transfer_syntax_uid=transfer_syntax_uid, sop_class_uid=sop_class_uid
            )
        except InvalidDicomError as exc:
            self.spool.discard(staged)
            log.warning("C-STORE from %s refused: instance %s: %s", calling, sop_instance_uid, exc)
            return self._refuse(STATUS_CANNOT_UNDERSTAND)
        info = checked.identity
        refusal = _mismatch(
            calling,
            abstract_syntax=abstract_syntax,
            affected_uid=sop_instance_uid,
            sop_class_uid=info.sop_class_uid,
            sop_instance_uid=info.sop_instance_uid,
        )
        if refusal is not None:
            self.spool.discard(staged)
            return self._refuse(refusal)
        try:
            self.spool.commit(
                staged,
                sop_instance_uid=info.sop_instance_uid,
                study_instance_uid=info.study_instance_uid,
                series_instance_uid=info.series_instance_uid,
                sop_class_uid=info.sop_class_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                calling_ae=calling,
                priority=checked.priority,
            )
        except (SpoolError, InvalidDicomError) as exc:
            log.error("C-STORE from %s: spool failure: %s", calling, exc)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self._touched.setdefault(association, set()).add(info.study_instance_uid)
        self.received += 1
        log.debug(
            "stored %s (%d bytes) from %s in %.3fs",
            info.sop_instance_uid,
            size,
            calling,
            time.monotonic() - started,
        )
        if self.on_stored is not None:
            self.on_stored()
        return STATUS_SUCCESS

    def handle_closed(self, event: evt.Event) -> None:
        with self._lock:
            studies = self._touched.pop(id(event.assoc), set())
        if studies:
            self.spool.association_released(studies)
            log.info(
                "association from %s closed: %d studies touched",
                event.assoc.requestor.ae_title,
                len(studies),
            )

    def handle_rejected(self, event: evt.Event) -> None:
        log.warning(
            "association from %s (%s) rejected: calling AE title not allowed or no resources",
            event.assoc.requestor.ae_title,
            event.assoc.requestor.address,
        )


def _mismatch(
    calling: str,
    *,
    abstract_syntax: str,
    affected_uid: str,
    sop_class_uid: str,
    sop_instance_uid: str,
) -> int | None:
    """The refusal status when the data set does not match its request, else None."""
    if sop_class_uid != abstract_syntax:
        log.warning(
            "C-STORE from %s refused: SOP class %s sent on a %s presentation context",
            calling,
            sop_class_uid,
            abstract_syntax,
        )
        return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
    if affected_uid and affected_uid != sop_instance_uid:
        log.warning("C-STORE from %s refused: SOP Instance UID mismatch", calling)
        return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
    return None


# Event-driven reactors. pynetdicom's two reactor threads per association poll: the DUL sleeps
# 1 ms whenever it finds nothing to do, and the association reactor sleeps 1 ms per loop before
# looking for a decoded DIMSE message. Each C-STORE crosses both, so every instance paid one to
# three milliseconds of sleeping. The queues below let both threads wait for the thing they poll
# for instead (the peer's socket, a primitive to send, a decoded message), so they wake at once
# and sleep longer when idle; and the DUL reads each PDU in one buffer (`_recv_exact`). They
# replace attributes of pynetdicom's DULServiceProvider, DIMSEServiceProvider and
# AssociationSocket (pynetdicom 3.0, pinned <4); `check_reactor_internals` fails start-up loudly
# if a new pynetdicom renames them.
IDLE_WAIT = 0.01  # s: longest an idle reactor waits before re-checking timers and flags


class _WakingQueue(queue.Queue[Any]):
    """A queue whose put() also wakes a thread waiting in select() on *wake*'s peer."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        # OSError: already signalled (buffer full) or closing; the reader wakes anyway.
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")


class _DulEventQueue(_WakingQueue):
    """The DUL's event queue: an empty non-blocking get() first waits until the peer sends
    data, another thread queues a primitive or event, or IDLE_WAIT passes."""

    def __init__(self, wake: socket.socket, waiter: socket.socket, peer: socket.socket) -> None:
        super().__init__(wake)
        self._waiter = waiter
        self._peer = peer

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        try:
            return super().get(False)
        except queue.Empty:
            pending = getattr(self._peer, "pending", None)  # TLS may hold decrypted bytes
            if pending is None or not pending():
                try:
                    ready, _, _ = select.select([self._peer, self._waiter], [], [], IDLE_WAIT)
                except (OSError, ValueError):
                    # The socket closed: the DUL is about to stop; do not spin meanwhile.
                    time.sleep(IDLE_WAIT)
                    ready = []
                if self._waiter in ready:
                    with contextlib.suppress(OSError):
                        self._waiter.recv(4096)
            raise


class _DimseMessageQueue(queue.Queue[Any]):
    """The decoded-message queue: the association reactor's non-blocking get() waits up to
    IDLE_WAIT for a message instead of returning empty at once (it then re-checks for release
    and abort, as before)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            return super().get(block, timeout)
        return super().get(True, IDLE_WAIT)


#: Largest buffer allocated before the bytes are there: a PDU header may claim up to 4 GiB.
RECV_CHUNK = 4 * 1024 * 1024


def _recv_exact(peer: socket.socket, nr_bytes: int) -> bytearray:
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


# Both reactor loops also sleep by themselves: the association reactor 1 ms at the top of every
# loop (pynetdicom Association._run_reactor: ``time.sleep(0.001)``), i.e. after every request it
# served and before it looks for the next, about a fifth of a CT slice's time on one
# association; and the DUL ``time.sleep(0)`` after every loop that found no event, which hands
# the GIL to any other thread and waits to get it back (the association thread finishing a
# response, say) before it sends what was just queued. Those sleeps go through the ``time``
# module pynetdicom.association and pynetdicom.dul imported; `_ReactorTime` stands in for it and
# skips exactly those sleeps on threads whose queues wait instead (`_DimseMessageQueue`,
# `_DulEventQueue`).
ACCEPTOR_LOOP_SLEEP = 0.001
DUL_LOOP_SLEEP = 0


class _ReactorTime:
    """The ``time`` module as pynetdicom's reactors see it (see above); all else unchanged."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds == ACCEPTOR_LOOP_SLEEP:
            dimse = getattr(threading.current_thread(), "dimse", None)  # an Association thread
            if dimse is not None and isinstance(dimse.msg_queue, _DimseMessageQueue):
                return  # its msg_queue.get() waits instead
        elif seconds == DUL_LOOP_SLEEP:
            events = getattr(threading.current_thread(), "event_queue", None)  # a DUL thread
            if isinstance(events, _DulEventQueue):
                return  # its event_queue.get() waits instead
        time.sleep(seconds)


def _install_reactor_time() -> None:
    from pynetdicom import association, dul

    for module in (association, dul):
        if not isinstance(getattr(module, "time", None), _ReactorTime):
            setattr(module, "time", _ReactorTime())  # noqa: B010  not exported: mypy


def check_reactor_internals() -> None:
    """Fail at start-up, clearly, if pynetdicom no longer has what `_wake_reactors` replaces
    and `_LeanStore` reads."""
    from pynetdicom import association, dul
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.transport import AssociationSocket

    probe = Association(AE(), "acceptor")
    missing = [
        name
        for owner, names in (
            (
                probe.dul,
                (
                    "event_queue",
                    "to_provider_queue",
                    "_run_loop_delay",
                    "_read_pdu_data",
                    "_recv_pdu",
                    "state_machine",
                ),
            ),
            (probe.dimse, ("msg_queue", "message", "maximum_pdu_size")),
            (probe, ("_accepted_cx", "_sent_release", "is_established")),
            (probe.acceptor, ("accepted_common_extended",)),
            (AssociationSocket, ("recv",)),
        )
        for name in names
        if not hasattr(owner, name)
    ]
    for module in (association, dul):
        if not isinstance(getattr(module, "time", None), type(time) | _ReactorTime):
            missing.append(f"{module.__name__}.time")
    if missing or not (
        isinstance(probe.dul, DULServiceProvider) and isinstance(probe.dimse, DIMSEServiceProvider)
    ):
        raise RuntimeError(
            "This pynetdicom version lacks the reactor internals the gateway tunes "
            f"({', '.join(missing) or 'provider classes'}); install pynetdicom 3.x."
        )


def _wake_reactors(event: evt.Event, handler: StoreHandler) -> None:
    """EVT_CONN_OPEN: swap the association's polled queues for waking ones (see above), and
    on plain TCP read P-DATA with `_read_pdu` for *handler*.

    Runs before the association's threads start; events already queued are carried over.
    """
    assoc = event.assoc
    dul = assoc.dul
    transport = dul.socket
    peer = transport.socket if transport is not None else None
    if transport is None or peer is None:
        return
    waiter, wake = socket.socketpair()
    waiter.setblocking(False)
    wake.setblocking(False)
    events = _DulEventQueue(wake, waiter, peer)
    while True:
        try:
            events.put(dul.event_queue.get_nowait())
        except queue.Empty:
            break
    outgoing = _WakingQueue(wake)
    while True:
        try:
            outgoing.put(dul.to_provider_queue.get_nowait())
        except queue.Empty:
            break
    dul.event_queue = events
    dul.to_provider_queue = outgoing
    dul._run_loop_delay = 0  # the wait happens in events.get()
    assoc.dimse.msg_queue = _DimseMessageQueue()
    transport.recv = functools.partial(_recv_exact, peer)  # type: ignore[method-assign]
    if not isinstance(peer, ssl.SSLSocket):  # TLS cannot peek at a PDU header (MSG_PEEK)
        lean = _LeanStore(handler, assoc)
        dul._read_pdu_data = functools.partial(_read_pdu, dul, dul._read_pdu_data, peer, lean)  # type: ignore[method-assign]
    dimse = assoc.dimse
    dimse.send_msg = functools.partial(_send_msg, dimse, dimse.send_msg)  # type: ignore[method-assign]
    setattr(assoc, "_imaging_hub_wake", (waiter, wake))  # noqa: B010  closed on EVT_CONN_CLOSE


def _send_msg(dimse: Any, send_msg: Any, primitive: Any, context_id: int) -> None:
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
        if _fits_one_pdu(dimse, command):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, bytes([COMMAND_LAST]) + command))
            dimse.dul.send_pdu(pdata)
            return
    send_msg(primitive, context_id)


def _fits_one_pdu(dimse: Any, command: bytes) -> bool:
    """Whether *command* fits one PDV in a PDU the peer accepts (its maximum PDU length
    counts the PDV item: length, context ID and control header, 6 bytes, then the value)."""
    limit = dimse.maximum_pdu_size
    return not limit or len(command) + 6 <= limit


ESTABLISHED = "Sta6"  # PS3.8 9.2: Association established and ready for data transfer


def _read_pdu(dul: Any, read_pdu_data: Any, peer: socket.socket, lean: "_LeanStore") -> None:
    """DULServiceProvider._read_pdu_data, with P-DATA-TF PDUs of an established association
    handed straight to DIMSE.

    In state Sta6 a P-DATA-TF PDU leads to DT-2 (PS3.8 9.2.2), which passes its presentation
    data values to DIMSE and stays in Sta6. pynetdicom gets there through a copy of the whole
    PDU, a decoded PDU object with a copy of each value, a state-machine event on a queue and a
    primitive: about 90 us and three copies per 128 KiB. Here the values go on as views of the
    PDU as read, to `_LeanStore` (plain C-STORE requests) or to ``dimse.receive_primitive``
    (what DT-2 calls). Any other PDU, any other state, pending events or bound PDU/data event
    handlers (pynetdicom's debug logging) take pynetdicom's path; TLS associations keep it
    throughout (`_wake_reactors`).
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
        pdu = _recv_exact(peer, 6 + length)
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


class _LeanStore:
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

    def __init__(self, handler: StoreHandler, assoc: Any) -> None:
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
            or any(assoc.get_handlers(event) for event in _LEAN_BLOCKING_EVENTS)
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
        if not _fits_one_pdu(assoc.dimse, command):  # a peer with a tiny PDU: pynetdicom fragments
            response = C_STORE()
            response.MessageIDBeingRespondedTo = request.message_id
            response.AffectedSOPClassUID = request.sop_class_uid
            response.AffectedSOPInstanceUID = request.sop_instance_uid
            response.Status = status
            assoc.dimse.send_msg(response, context_id)
            return
        assoc.dul.socket.send(p_data_tf(context_id, command))


#: Events whose handlers see DIMSE messages or raw data: bound, pynetdicom serves every request.
_LEAN_BLOCKING_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_DATA_SENT)


def _close_wake(event: evt.Event) -> None:
    for sock in getattr(event.assoc, "_imaging_hub_wake", ()):
        sock.close()


def _affected_uid(event: evt.Event) -> str:
    """The Affected SOP Instance UID of the request (for log lines and the UID check)."""
    return str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")


def _register_storage_class(uid: str) -> None:
    """Route C-STOREs of a SOP class pynetdicom does not know to its Storage service class."""
    if pynetdicom_sop_class.uid_to_service_class(uid) is not StorageServiceClass:
        pynetdicom_sop_class.register_uid(
            uid, "ImagingHubStorage_" + uid.replace(".", "_"), StorageServiceClass
        )


def _copy_uids_by_reference() -> None:
    """Make ``copy.deepcopy`` return a pydicom UID itself instead of rebuilding it.

    pynetdicom deep-copies the AE's presentation contexts for every association (180 SOP classes
    times ~45 transfer syntaxes here). deepcopy rebuilds each UID, a str subclass, through
    ``__reduce_ex__``: about 60 ms per association, a third of the time a two-image DX study
    takes. A UID is immutable, so sharing it is what deepcopy does for str already.
    """
    dispatch = getattr(copy, "_deepcopy_dispatch", None)
    if isinstance(dispatch, dict):
        dispatch[UID] = lambda value, memo: value


def make_ae(
    ae_title: str,
    *,
    allowed_calling_aes: list[str] | None = None,
    extra_storage_sop_classes: list[str] | None = None,
) -> AE:
    """An AE accepting Verification and every storage SOP class in every transfer syntax.

    Every storage SOP class pynetdicom knows, the retired ones old machines still send, and
    *extra_storage_sop_classes* (private classes such as a vendor's own). With
    *allowed_calling_aes*, any other calling AE title is rejected at association (PS3.8 7.1.1.9).
    """
    check_reactor_internals()
    _install_reactor_time()
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        # pynetdicom's own event logging (a handler on every PDU and message) only writes at
        # INFO and DEBUG: unbound, it costs nothing. Enable the logger to get it back.
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    _copy_uids_by_reference()
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = 32
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    known = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    for uid in [*RETIRED_STORAGE_SOP_CLASSES, *(extra_storage_sop_classes or [])]:
        if uid not in known:
            _register_storage_class(uid)
            known.append(uid)
    for sop_class in known:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    if allowed_calling_aes:
        ae.require_calling_aet = list(allowed_calling_aes)
    return ae


def _event_handlers(handler: StoreHandler) -> list[Any]:
    return [
        (evt.EVT_C_ECHO, handler.handle_echo),
        (evt.EVT_C_STORE, handler.handle_store),
        (evt.EVT_RELEASED, handler.handle_closed),
        (evt.EVT_ABORTED, handler.handle_closed),
        (evt.EVT_REJECTED, handler.handle_rejected),
        (evt.EVT_CONN_OPEN, _wake_reactors, [handler]),
        (evt.EVT_CONN_CLOSE, _close_wake),
    ]


# A client that connects and never completes the TLS handshake holds the acceptor this long.
TLS_HANDSHAKE_TIMEOUT = 10.0


def _wrap_tls(client: socket.socket, ssl_context: ssl.SSLContext | None) -> socket.socket:
    """The accepted socket, after a TLS handshake bounded by TLS_HANDSHAKE_TIMEOUT (PS3.15 B.9).

    A failed or timed-out handshake raises OSError, which the socket server treats as "no
    request": the connection is dropped and the SCP keeps accepting.
    """
    if ssl_context is None:
        return client
    client.settimeout(TLS_HANDSHAKE_TIMEOUT)
    try:
        tls = ssl_context.wrap_socket(client, server_side=True)
    except OSError as exc:
        log.warning("DICOM TLS handshake failed: %s", exc)
        client.close()
        raise
    tls.settimeout(None)
    return tls


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a bounded TLS handshake on accept."""

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        return _wrap_tls(client, self.ssl_context), address


def start_scp(
    ae: AE,
    handler: StoreHandler,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Serve on (host, port); with *ssl_context*, every association runs over TLS."""
    if ssl_context is not None:
        tls_server = ae.make_server(
            (host, port),
            ssl_context=ssl_context,
            evt_handlers=_event_handlers(handler),
            server_class=TlsAssociationServer,
        )
        ae._servers.append(tls_server)  # as AE.start_server does: shutdown() removes it again
        thread = threading.Thread(target=tls_server.serve_forever, name="scp-acceptor", daemon=True)
        thread.start()
        return tls_server
    server = ae.start_server((host, port), block=False, evt_handlers=_event_handlers(handler))
    assert server is not None  # block=False always returns the server
    return server


def listen_socket(host: str, port: int, *, backlog: int = 64) -> socket.socket:
    """The listening socket the SCP worker processes share (one accept queue for all).

    One shared socket rather than one SO_REUSEPORT socket per worker: the kernel hashes
    SO_REUSEPORT connections to sockets blindly (four associations often land three on one
    worker), and connections queued on a dead worker's socket would be reset. With one queue,
    whichever worker is least busy accepts, and a killed worker loses nothing queued.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)  # workers race for each connection; losers get EAGAIN
    return sock


class SharedSocketServer(ThreadedAssociationServer):
    """pynetdicom's threaded server accepting on a socket shared with other worker processes.

    ``loads`` holds the number of open associations of every worker; a worker busier than the
    least busy one lets that one take the connection (for a few milliseconds at most, so a hung
    or dead worker cannot stall accepting).
    """

    shared_socket: socket.socket
    loads: Any  # multiprocessing.Array("i", workers), synchronized
    index: int
    MAX_DEFERRALS = 3

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = self.shared_socket
        self.server_address = self.socket.getsockname()
        self._deferrals = 0

    def server_activate(self) -> None:
        """The shared socket is listening already."""

    def get_request(self) -> tuple[socket.socket, Any]:
        loads = list(self.loads)
        mine = loads[self.index]
        others = [n for i, n in enumerate(loads) if i != self.index]
        if others and mine > min(others) and self._deferrals < self.MAX_DEFERRALS:
            self._deferrals += 1
            time.sleep(0.002)
            raise BlockingIOError("a less busy worker may accept this connection")
        self._deferrals = 0
        client, address = self.shared_socket.accept()  # BlockingIOError: another worker took it
        client.setblocking(True)
        client = _wrap_tls(client, self.ssl_context)
        with self.loads.get_lock():
            self.loads[self.index] += 1  # down again when the connection closes
        return client, address


def start_shared_scp(
    ae: AE,
    handler: StoreHandler,
    sock: socket.socket,
    *,
    loads: Any,
    index: int,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Serve on *sock*, shared with other workers; ``loads[index]`` counts our associations."""

    def closed(event: evt.Event) -> None:
        with loads.get_lock():
            loads[index] = max(0, loads[index] - 1)

    server_class = type(
        "BoundSharedSocketServer",
        (SharedSocketServer,),
        {"shared_socket": sock, "loads": loads, "index": index},
    )
    handlers = [
        *_event_handlers(handler),
        (evt.EVT_CONN_CLOSE, closed),
    ]
    host, port = sock.getsockname()[:2]
    server = ae.make_server(
        (host, port), ssl_context=ssl_context, evt_handlers=handlers, server_class=server_class
    )
    ae._servers.append(server)  # as AE.start_server does: shutdown() removes it again
    thread = threading.Thread(target=server.serve_forever, name="scp-acceptor", daemon=True)
    thread.start()
    return server
