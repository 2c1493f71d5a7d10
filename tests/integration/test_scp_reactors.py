"""The lean path's event-driven reactors and P-DATA reader (lean.attach) on pynetdicom's real
association threads.

pynetdicom polls with 1 ms sleeps; the gateway swaps in queues that wait on the socket. These
tests check the swap happens on every association, that an idle association does not spin, that
the wake-up sockets are closed with the association, and what the P-DATA reader does with good,
foreign and hostile PDUs. The peers are real: dcmtk's echoscu/storescu, or pynetdicom as the
requestor writing raw PDUs on its socket, over 127.0.0.1.
"""

import contextlib
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging_hub.dicom.scu import reactor_parked
from imaging_hub.dicom_gateway import lean, scp
from imaging_hub.dicom_gateway.lean import dul as lean_dul
from imaging_hub.dicom_gateway.lean import reactors
from imaging_hub.dicom_gateway.lean import store as lean_store
from imaging_hub.dicom_gateway.spool import Spool
from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.net import free_port, wait_until

SAMPLE = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"


class RecordingHandler(scp.StoreHandler):
    """Remembers the association of every C-ECHO (to look at its reactors' queues)."""

    def __init__(self, spool: Spool) -> None:
        super().__init__(spool, max_instance_bytes=10**9)
        self.seen: list[Any] = []

    def handle_echo(self, event: evt.Event) -> int:
        self.seen.append(event.assoc)
        return super().handle_echo(event)


def test_reactor_internals_are_present() -> None:
    reactors.check_reactor_internals()  # raises RuntimeError if pynetdicom changed under us
    assert lean.unsupported_reason() is None


def test_only_our_reactors_skip_their_loop_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """lean.install swaps the ``time`` of pynetdicom.association and pynetdicom.dul for one that
    skips the acceptor loop's 1 ms sleep and the DUL loop's sleep(0) on threads whose queues
    wait (ours); every other sleep, on any thread, still sleeps."""
    from pynetdicom import association, dul

    assert lean.install()
    assert isinstance(association.time, reactors._ReactorTime)
    assert isinstance(dul.time, reactors._ReactorTime)
    assert dul.time.monotonic() <= time.monotonic()  # the rest is the time module
    slept: list[float] = []
    monkeypatch.setattr(reactors, "time", SimpleNamespace(sleep=slept.append))

    def sleeps(seconds: float, **attributes: Any) -> bool:
        """Whether sleep(seconds) on a thread with *attributes* reached time.sleep."""
        slept.clear()
        reactor = threading.Thread(target=lambda: association.time.sleep(seconds))
        for name, value in attributes.items():
            setattr(reactor, name, value)
        reactor.start()
        reactor.join()
        return slept == [seconds]

    waiting_dimse = SimpleNamespace(msg_queue=reactors.DimseMessageQueue())
    polling_dimse = SimpleNamespace(msg_queue=queue.Queue())
    a, b = socket.socketpair()
    try:
        waiting_events = reactors.DulEventQueue(a, b, a)
        assert not sleeps(reactors.ACCEPTOR_LOOP_SLEEP, dimse=waiting_dimse)
        assert sleeps(reactors.ACCEPTOR_LOOP_SLEEP, dimse=polling_dimse)
        assert sleeps(reactors.ACCEPTOR_LOOP_SLEEP)
        assert sleeps(0.002, dimse=waiting_dimse)
        assert not sleeps(reactors.DUL_LOOP_SLEEP, event_queue=waiting_events)
        assert sleeps(reactors.DUL_LOOP_SLEEP, event_queue=queue.Queue())
        assert sleeps(reactors.DUL_LOOP_SLEEP)  # another thread waiting for a DUL to stop
        assert sleeps(reactors.ACCEPTOR_LOOP_SLEEP, event_queue=waiting_events)
    finally:
        a.close()
        b.close()


def test_presentation_contexts_copy_cheaply_and_completely() -> None:
    """lean.install lets deepcopy share UIDs (immutable): pynetdicom copies every context per
    association. The copies are still separate, equal contexts."""
    import copy

    assert lean.install()
    ae = scp.make_ae("COPY")
    contexts = ae.supported_contexts
    copied = copy.deepcopy(contexts)
    uid = contexts[0].transfer_syntax[0]
    assert copy.deepcopy(uid) is uid
    assert copied[0] is not contexts[0]
    assert copied[0].transfer_syntax is not contexts[0].transfer_syntax
    assert [(c.abstract_syntax, c.transfer_syntax) for c in copied] == [
        (c.abstract_syntax, c.transfer_syntax) for c in contexts
    ]


def test_every_association_gets_waking_queues_and_closes_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    handler = RecordingHandler(spool)
    port = free_port()
    server = scp.start_scp(scp.make_ae("REACTOR"), handler, "127.0.0.1", port)
    try:
        for _ in range(2):
            assert echoscu(port, called_ae="REACTOR").returncode == 0
        assert len(handler.seen) == 2
        for assoc in handler.seen:
            assert isinstance(assoc.dul.event_queue, reactors.DulEventQueue)
            assert isinstance(assoc.dul.to_provider_queue, reactors.WakingQueue)
            assert isinstance(assoc.dimse.msg_queue, reactors.DimseMessageQueue)
            assert assoc.dul._run_loop_delay == 0
            assert assoc.dimse.send_msg.func is lean_store.send_msg
            assert assoc.dul._read_pdu_data.func is lean_dul.read_pdu
            wake = assoc._imaging_hub_wake
            wait_until(lambda a=wake: all(s.fileno() == -1 for s in a) or None, timeout=5)
        # Instances still go through, several on one association.
        files = []
        for index in range(3):
            ds = pydicom.dcmread(SAMPLE)
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            files.append(tmp_path / f"{index}.dcm")
            ds.save_as(files[-1])
        sent = storescu(port, files, called_ae="REACTOR")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert handler.received == 3
    finally:
        server.shutdown()
        spool.close()


@contextlib.contextmanager
def _associated(
    tmp_path: Path, ae_title: str, *, max_pdu: int = 16382
) -> Iterator[tuple[Any, scp.StoreHandler, int]]:
    """An SCP on a fresh spool and an established Verification association to it (pynetdicom
    as the requestor, accepting PDUs of *max_pdu* bytes): (association, handler, port)."""
    spool = Spool(tmp_path / "spool")
    handler = scp.StoreHandler(spool, max_instance_bytes=10**9)
    port = free_port()
    server = scp.start_scp(scp.make_ae(ae_title), handler, "127.0.0.1", port)
    requestor = AE(ae_title="REQUESTOR")
    requestor.add_requested_context(Verification)
    assoc = None
    try:
        assoc = requestor.associate("127.0.0.1", port, ae_title=ae_title, max_pdu=max_pdu)
        assert assoc.is_established
        yield assoc, handler, port
    finally:
        if assoc is not None:
            if assoc.is_alive():
                assoc.abort()
            assoc.join()
            # pynetdicom closes the requestor's socket with shutdown() then close() in one try:
            # after a test cut the connection, shutdown fails and close never runs.
            transport = assoc.dul.socket
            if transport is not None and transport.socket is not None:
                transport.socket.close()
        server.shutdown()
        spool.close()


def test_an_idle_association_does_not_spin(tmp_path: Path) -> None:
    """One second of an open, idle association costs the process little CPU (a poll loop
    without its sleeps would burn a whole core)."""
    with _associated(tmp_path, "IDLE") as (assoc, _, _):
        # pynetdicom's requestor side polls too (1 ms sleeps): that is part of the budget.
        before = time.process_time()
        time.sleep(1.0)
        used = time.process_time() - before
        assoc.release()
        assert used < 0.4, f"an idle association used {used:.2f} s of CPU in 1 s"


def _acceptor(port: int) -> Any:
    """The SCP's side of the association established on *port* (its real DUL thread's)."""
    from pynetdicom.dul import DULServiceProvider

    def find() -> Any:
        for thread in threading.enumerate():
            if isinstance(thread, DULServiceProvider) and thread.assoc.is_acceptor:
                sock = thread.socket.socket if thread.socket is not None else None
                with contextlib.suppress(OSError):
                    if sock is not None and sock.getsockname()[1] == port:
                        return thread.assoc if thread.assoc.is_established else None
        return None

    return wait_until(find, timeout=5)


def _store_response(**extra: Any) -> Any:
    from pynetdicom.dimse_primitives import C_STORE

    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Status = 0x0000
    for name, value in extra.items():
        setattr(primitive, name, value)
    return primitive


@pytest.mark.parametrize(
    ("extra", "debug_handler", "max_pdu", "direct"),
    [
        ({}, False, 0, True),
        ({}, False, 16382, True),
        ({"Status": 0xC000}, False, 0, True),
        ({"Status": 0xC000, "ErrorComment": "bad"}, False, 0, False),
        ({}, True, 0, False),
        ({}, False, 50, False),  # the response would not fit in one PDU
    ],
)
def test_store_responses_are_encoded_directly_unless_pynetdicom_must(
    tmp_path: Path, extra: dict[str, Any], debug_handler: bool, max_pdu: int, direct: bool
) -> None:
    """lean.store.send_msg on the SCP's real association: sent directly, the requestor's
    pynetdicom decodes the very response; otherwise pynetdicom's own send_msg gets it."""
    received: list[Any] = []
    with _associated(tmp_path, "RSP", max_pdu=max_pdu) as (assoc, _, port):
        assoc.bind(evt.EVT_DIMSE_RECV, lambda event: received.append(event.message))
        acceptor = _acceptor(port)
        assert acceptor.dimse.maximum_pdu_size == max_pdu
        if debug_handler:
            acceptor.bind(evt.EVT_DIMSE_SENT, lambda event: None)
        fallback: list[Any] = []
        primitive = _store_response(**extra)
        context_id = assoc.accepted_contexts[0].context_id
        lean_store.send_msg(
            acceptor.dimse, lambda p, c: fallback.append((p, c)), primitive, context_id
        )
        if direct:
            assert not fallback
            (message,) = wait_until(lambda: received or None, timeout=5)
            command = message.command_set
            assert command.CommandField == 0x8001  # C-STORE-RSP
            assert command.MessageIDBeingRespondedTo == 7
            assert command.AffectedSOPInstanceUID == "1.2.3.4"
            assert command.Status == primitive.Status
        else:
            assert fallback == [(primitive, context_id)]
            time.sleep(0.2)
            assert not received
        assoc.abort()


def _pdata_pdu(*values: tuple[int, bytes]) -> bytes:
    items = b"".join(
        struct.pack(">LB", len(value) + 1, context) + value for context, value in values
    )
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


def _echo_command(message_id: int) -> bytes:
    from pynetdicom.dimse_messages import C_ECHO_RQ
    from pynetdicom.dimse_primitives import C_ECHO
    from pynetdicom.dsutils import encode

    primitive = C_ECHO()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = Verification
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    encoded = encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def test_p_data_goes_straight_to_dimse_as_pynetdicom_would_decode_it(tmp_path: Path) -> None:
    """A C-ECHO-RQ whose command comes in two fragments of one P-DATA-TF PDU: each value goes
    to the real DIMSE provider as pynetdicom's own decoder would deliver it, and the echo is
    answered."""
    from pynetdicom.pdu import P_DATA_TF

    received: list[Any] = []
    with _associated(tmp_path, "PDATA") as (assoc, _, port):
        assoc.bind(evt.EVT_DIMSE_RECV, lambda event: received.append(event.message))
        acceptor = _acceptor(port)
        delivered: list[list[tuple[int, bytes]]] = []
        receive = acceptor.dimse.receive_primitive

        def recording(primitive: Any) -> None:
            delivered.append(
                [(cx, bytes(value)) for cx, value in primitive.presentation_data_value_list]
            )
            receive(primitive)

        acceptor.dimse.receive_primitive = recording
        context_id = assoc.accepted_contexts[0].context_id
        command = _echo_command(5)
        values = [(context_id, b"\x01" + command[:20]), (context_id, b"\x03" + command[20:])]
        pdu = _pdata_pdu(*values)
        assoc.dul.socket.socket.sendall(pdu)
        (answer,) = wait_until(lambda: received or None, timeout=5)
        assert answer.command_set.MessageIDBeingRespondedTo == 5
        assert answer.command_set.Status == 0x0000
        decoded = P_DATA_TF()
        decoded.decode(pdu)
        as_pynetdicom = decoded.to_primitive().presentation_data_value_list
        assert delivered == [[(cx, bytes(value))] for cx, value in as_pynetdicom]
        assert delivered == [[value] for value in values]
        assoc.release()
        assert assoc.is_released


def test_other_pdus_take_pynetdicoms_path(tmp_path: Path) -> None:
    """An A-RELEASE-RQ (not P-DATA) is left on the socket for pynetdicom's reader: the
    association is released as usual, and P-DATA with a data event handler bound (pynetdicom's
    debug logging) is read by pynetdicom too."""
    seen: list[Any] = []
    with _associated(tmp_path, "OTHER") as (assoc, handler, port):
        acceptor = _acceptor(port)
        acceptor.bind(evt.EVT_DATA_RECV, lambda event: seen.append(event.data))
        with reactor_parked(assoc):
            assert assoc.send_c_echo().Status == 0x0000
        assert seen and handler.received == 0
        assoc.release()
        assert assoc.is_released
        wait_until(lambda: acceptor.is_released or None, timeout=5)


INVALID_PDATA = [
    struct.pack(">BBL", 0x04, 0, 7) + struct.pack(">L", 1) + b"\x01\x02\x00",  # item of 1
    struct.pack(">BBL", 0x04, 0, 9) + struct.pack(">L", 50) + b"\x01\x02abcd",  # overruns
    struct.pack(">BBL", 0x04, 0, 3) + b"\x00\x00\x00",  # no room for an item header
    struct.pack(">BBL", 0x04, 0, 6) + struct.pack(">L", 2) + b"\x01\x03",  # empty fragment
    struct.pack(">BBL", 0x04, 0, 9) + struct.pack(">L", 500) + b"\x01\x03abcd",  # overrun
    _pdata_pdu((1, b"\x03" + b"\xff" * 64)),  # a command set that is not one
    _pdata_pdu((99, b"\x03" + b"\x00" * 16)),  # an unknown presentation context
]


@pytest.mark.parametrize("hostile", INVALID_PDATA)
def test_a_hostile_p_data_pdu_ends_its_association_and_the_scp_keeps_serving(
    tmp_path: Path, hostile: bytes
) -> None:
    """A P-DATA-TF PDU that is malformed in the ways a hostile peer can choose ends that
    association (nothing spooled), and the next association is served normally."""
    with _associated(tmp_path, "HOSTILE") as (assoc, handler, port):
        assoc.dul.socket.socket.sendall(hostile)
        wait_until(lambda: (assoc.is_aborted or not assoc.is_alive()) or None, timeout=10)
        assert not assoc.is_established
        assert handler.received == 0
        assert not list((tmp_path / "spool" / "objects").rglob("*.dcm"))
        assert echoscu(port, called_ae="HOSTILE").returncode == 0


def test_a_pdu_cut_by_a_closed_connection_ends_the_association(tmp_path: Path) -> None:
    with _associated(tmp_path, "CUT") as (assoc, handler, port):
        acceptor = _acceptor(port)
        raw = assoc.dul.socket.socket
        raw.sendall(_pdata_pdu((1, b"\x02" + b"x" * 1000))[:500])
        raw.shutdown(socket.SHUT_RDWR)
        wait_until(lambda: (not acceptor.is_alive()) or None, timeout=10)
        assert not acceptor.is_established and handler.received == 0
        assert echoscu(port, called_ae="CUT").returncode == 0


def test_a_hostile_pdu_length_costs_no_memory_the_peer_does_not_send() -> None:
    """A PDU header may claim 4 GiB; the read buffer grows with what arrives, not with that."""
    import resource

    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b"abc")
        theirs.close()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert lean_dul.recv_exact(ours, 3 * 1024**3) == b"abc"
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 64 * 1024
    finally:
        ours.close()
    a, b = socket.socketpair()
    try:
        payload = bytes(range(256)) * 40_000  # 10 MB: more than one RECV_CHUNK
        sender = threading.Thread(target=b.sendall, args=(payload,))
        sender.start()
        assert lean_dul.recv_exact(a, len(payload)) == payload
        sender.join()
    finally:
        a.close()
        b.close()
