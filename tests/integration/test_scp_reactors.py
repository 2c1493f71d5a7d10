"""The SCP's event-driven reactors (scp._wake_reactors) on pynetdicom's association threads.

pynetdicom polls with 1 ms sleeps; the gateway swaps in queues that wait on the socket. These
tests check the swap happens on every association, that an idle association does not spin, and
that the wake-up sockets are closed with the association. dcmtk's echoscu/storescu are the peers.
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
from typing import Any, cast

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging_hub.dicom_gateway import scp
from imaging_hub.dicom_gateway.spool import Spool
from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.net import free_port, wait_until

SAMPLE = SAMPLES / "by-modality" / "CR" / "Carestream_DR7500-1.dcm"


class RecordingHandler(scp.StoreHandler):
    """Remembers the association of every C-ECHO (to look at its reactors' queues)."""

    def __init__(self, spool: Spool) -> None:
        super().__init__(spool, max_instance_bytes=10**9)
        self.seen: list[Any] = []

    def handle_echo(self, event: evt.Event) -> int:
        self.seen.append(event.assoc)
        return super().handle_echo(event)


def test_reactor_internals_are_present() -> None:
    scp.check_reactor_internals()  # raises RuntimeError if pynetdicom changed under us


def test_only_our_reactors_skip_their_loop_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_ae swaps the ``time`` of pynetdicom.association and pynetdicom.dul for one that
    skips the acceptor loop's 1 ms sleep and the DUL loop's sleep(0) on threads whose queues
    wait (ours); every other sleep, on any thread, still sleeps."""
    from pynetdicom import association, dul

    scp.make_ae("SLEEPS")
    assert isinstance(association.time, scp._ReactorTime)
    assert isinstance(dul.time, scp._ReactorTime)
    assert dul.time.monotonic() <= time.monotonic()  # the rest is the time module
    slept: list[float] = []
    monkeypatch.setattr(scp, "time", SimpleNamespace(sleep=slept.append))

    def sleeps(seconds: float, **attributes: Any) -> bool:
        """Whether sleep(seconds) on a thread with *attributes* reached time.sleep."""
        slept.clear()
        reactor = threading.Thread(target=lambda: association.time.sleep(seconds))
        for name, value in attributes.items():
            setattr(reactor, name, value)
        reactor.start()
        reactor.join()
        return slept == [seconds]

    waiting_dimse = SimpleNamespace(msg_queue=scp._DimseMessageQueue())
    polling_dimse = SimpleNamespace(msg_queue=queue.Queue())
    a, b = socket.socketpair()
    try:
        waiting_events = scp._DulEventQueue(a, b, a)
        assert not sleeps(scp.ACCEPTOR_LOOP_SLEEP, dimse=waiting_dimse)
        assert sleeps(scp.ACCEPTOR_LOOP_SLEEP, dimse=polling_dimse)
        assert sleeps(scp.ACCEPTOR_LOOP_SLEEP)
        assert sleeps(0.002, dimse=waiting_dimse)
        assert not sleeps(scp.DUL_LOOP_SLEEP, event_queue=waiting_events)
        assert sleeps(scp.DUL_LOOP_SLEEP, event_queue=queue.Queue())
        assert sleeps(scp.DUL_LOOP_SLEEP)  # another thread waiting for a DUL to stop
        assert sleeps(scp.ACCEPTOR_LOOP_SLEEP, event_queue=waiting_events)
    finally:
        a.close()
        b.close()


def test_presentation_contexts_copy_cheaply_and_completely() -> None:
    """make_ae lets deepcopy share UIDs (immutable): pynetdicom copies every context per
    association. The copies are still separate, equal contexts."""
    import copy

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
            assert isinstance(assoc.dul.event_queue, scp._DulEventQueue)
            assert isinstance(assoc.dul.to_provider_queue, scp._WakingQueue)
            assert isinstance(assoc.dimse.msg_queue, scp._DimseMessageQueue)
            assert assoc.dul._run_loop_delay == 0
            assert assoc.dimse.send_msg.func is scp._send_msg
            assert assoc.dul._read_pdu_data.func is scp._read_pdu
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
def _associated(tmp_path: Path, ae_title: str) -> Iterator[tuple[Any, scp.StoreHandler, int]]:
    """An SCP on a fresh spool and an established Verification association to it (pynetdicom
    as the requestor): (association, handler, port)."""
    spool = Spool(tmp_path / "spool")
    handler = scp.StoreHandler(spool, max_instance_bytes=10**9)
    port = free_port()
    server = scp.start_scp(scp.make_ae(ae_title), handler, "127.0.0.1", port)
    requestor = AE(ae_title="REQUESTOR")
    requestor.add_requested_context(Verification)
    try:
        assoc = requestor.associate("127.0.0.1", port, ae_title=ae_title)
        assert assoc.is_established
        yield assoc, handler, port
    finally:
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
    ("extra", "handlers", "max_pdu", "direct"),
    [
        ({}, [], 0, True),
        ({}, [], 16382, True),
        ({"Status": 0xC000}, [], 0, True),
        ({"Status": 0xC000, "ErrorComment": "bad"}, [], 0, False),
        ({}, [("a debug logger", None)], 0, False),
        ({}, [], 50, False),  # the response would not fit in one PDU
    ],
)
def test_store_responses_are_encoded_directly_unless_pynetdicom_must(
    extra: dict[str, Any], handlers: list[Any], max_pdu: int, direct: bool
) -> None:
    from imaging_hub.dicom.dimse import store_response_command

    sent: list[Any] = []
    fallback: list[Any] = []
    dimse = SimpleNamespace(
        assoc=SimpleNamespace(get_handlers=lambda event: handlers),
        maximum_pdu_size=max_pdu,
        dul=SimpleNamespace(send_pdu=sent.append),
    )
    primitive = _store_response(**extra)
    scp._send_msg(dimse, lambda p, c: fallback.append((p, c)), primitive, 3)
    if direct:
        assert not fallback
        (pdata,) = sent
        command = store_response_command(
            message_id=7,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid="1.2.3.4",
            status=primitive.Status,
        )
        assert pdata.presentation_data_value_list == [(3, b"\x03" + command)]
    else:
        assert not sent
        assert fallback == [(primitive, 3)]


def _pdata_pdu(*values: tuple[int, bytes]) -> bytes:
    items = b"".join(
        struct.pack(">LB", len(value) + 1, context) + value for context, value in values
    )
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


class _FakeDul:
    """What scp._read_pdu uses of a DULServiceProvider; records what it hands on."""

    def __init__(self, state: str = "Sta6", handlers: list[Any] | None = None) -> None:
        self.state_machine = SimpleNamespace(current_state=state)
        self.event_queue: queue.Queue[Any] = queue.Queue()
        self._recv_pdu: queue.Queue[Any] = queue.Queue()
        self.delivered: list[list[tuple[int, bytes]]] = []
        self.pynetdicom_reads = 0
        self.assoc = SimpleNamespace(
            get_handlers=lambda event: handlers or [],
            dimse=SimpleNamespace(receive_primitive=self._receive, message=None),
        )

    def _receive(self, primitive: Any) -> None:
        self.delivered.append(
            [(context, bytes(value)) for context, value in primitive.presentation_data_value_list]
        )

    def read_pdu_data(self) -> None:
        self.pynetdicom_reads += 1


def _read(dul: _FakeDul, sent: bytes, *, close: bool = False) -> socket.socket:
    ours, theirs = socket.socketpair()
    theirs.sendall(sent)
    if close:
        theirs.close()
    try:
        scp._read_pdu(dul, dul.read_pdu_data, ours, scp._LeanStore(cast(Any, None), dul.assoc))
    finally:
        if not close:
            theirs.close()
    return ours


def test_p_data_goes_straight_to_dimse_as_pynetdicom_would_decode_it() -> None:
    from pynetdicom.pdu import P_DATA_TF

    values = [(1, b"\x03" + b"c" * 40), (3, b"\x00" + bytes(range(256)) * 100)]
    pdu = _pdata_pdu(*values)
    dul = _FakeDul()
    _read(dul, pdu + b"next").close()
    decoded = P_DATA_TF()
    decoded.decode(pdu)
    as_pynetdicom = decoded.to_primitive().presentation_data_value_list
    # Neither value is a C-STORE-RQ command: each goes to pynetdicom's DIMSE, in order.
    assert dul.delivered == [[(context, bytes(value))] for context, value in as_pynetdicom]
    assert dul.delivered == [[value] for value in values]
    assert dul.event_queue.empty() and dul.pynetdicom_reads == 0


@pytest.mark.parametrize(
    ("dul", "sent"),
    [
        (_FakeDul(state="Sta7"), _pdata_pdu((1, b"\x02data"))),  # releasing: the state machine
        (_FakeDul(handlers=[("a debug logger", None)]), _pdata_pdu((1, b"\x02data"))),
        (_FakeDul(), struct.pack(">BBL", 0x05, 0, 4) + b"\x00" * 4),  # A-RELEASE-RQ
    ],
)
def test_other_pdus_and_states_take_pynetdicoms_path_with_nothing_consumed(
    dul: _FakeDul, sent: bytes
) -> None:
    ours = _read(dul, sent)
    try:
        assert dul.pynetdicom_reads == 1 and not dul.delivered
        assert ours.recv(len(sent) + 10) == sent  # still there for pynetdicom to read
    finally:
        ours.close()


def test_a_pending_event_keeps_the_order_by_taking_pynetdicoms_path() -> None:
    dul = _FakeDul()
    dul.event_queue.put("Evt10")  # an earlier P-DATA-TF not yet through the state machine
    _read(dul, _pdata_pdu((1, b"\x02data"))).close()
    assert dul.pynetdicom_reads == 1 and not dul.delivered


@pytest.mark.parametrize(
    "sent",
    [
        struct.pack(">BBL", 0x04, 0, 7) + struct.pack(">L", 1) + b"\x01\x02\x00",  # item of 1
        struct.pack(">BBL", 0x04, 0, 9) + struct.pack(">L", 50) + b"\x01\x02abcd",  # overruns
        struct.pack(">BBL", 0x04, 0, 3) + b"\x00\x00\x00",  # no room for an item header
    ],
)
def test_an_invalid_p_data_pdu_is_event_19_and_nothing_delivered(sent: bytes) -> None:
    dul = _FakeDul()
    _read(dul, sent).close()
    assert dul.event_queue.get_nowait() == "Evt19"
    assert not dul.delivered and dul.pynetdicom_reads == 0


def test_a_pdu_cut_by_a_closed_connection_is_event_17() -> None:
    dul = _FakeDul()
    sent = _pdata_pdu((1, b"\x02" + b"x" * 1000))
    _read(dul, sent[:500], close=True).close()
    assert dul.event_queue.get_nowait() == "Evt17"
    assert not dul.delivered


@pytest.mark.parametrize(
    "hostile",
    [
        struct.pack(">BBL", 0x04, 0, 6) + struct.pack(">L", 2) + b"\x01\x03",  # empty fragment
        struct.pack(">BBL", 0x04, 0, 9) + struct.pack(">L", 500) + b"\x01\x03abcd",  # overrun
        _pdata_pdu((1, b"\x03" + b"\xff" * 64)),  # a command set that is not one
        _pdata_pdu((99, b"\x03" + b"\x00" * 16)),  # an unknown presentation context
    ],
)
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


def test_a_hostile_pdu_length_costs_no_memory_the_peer_does_not_send() -> None:
    """A PDU header may claim 4 GiB; the read buffer grows with what arrives, not with that."""
    import resource

    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b"abc")
        theirs.close()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert scp._recv_exact(ours, 3 * 1024**3) == b"abc"
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 64 * 1024
    finally:
        ours.close()
    a, b = socket.socketpair()
    try:
        payload = bytes(range(256)) * 40_000  # 10 MB: more than one RECV_CHUNK
        sender = threading.Thread(target=b.sendall, args=(payload,))
        sender.start()
        assert scp._recv_exact(a, len(payload)) == payload
        sender.join()
    finally:
        a.close()
        b.close()
