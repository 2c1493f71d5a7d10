"""Plain C-STORE requests served on the association's DUL thread (lean.store.LeanStore).

The requestor is pynetdicom (it lets a test choose PDU sizes and write raw PDUs); the SCP is the
gateway's, on a real spool over loopback. Each test checks which path served a request: the
lean one calls ``StoreHandler.store`` on the DUL thread without pynetdicom's EVT_C_STORE, the
pynetdicom one goes through ``handle_store``.
"""

import contextlib
import struct
import threading
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from imaging_hub.dicom.dimse import COMMAND_LAST
from imaging_hub.dicom.scu import reactor_parked
from imaging_hub.dicom_gateway import scp
from imaging_hub.dicom_gateway.lean.store import STATUS_HANDLER_FAILED
from imaging_hub.dicom_gateway.spool import Spool
from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu
from tests.peers.net import free_port, wait_until

CT = SAMPLES / "by-modality" / "CT" / "CT_small.dcm"


class Recording(scp.StoreHandler):
    """Records which path served each request, and on which thread."""

    def __init__(self, spool: Spool, *, max_instance_bytes: int = 10**9) -> None:
        super().__init__(spool, max_instance_bytes=max_instance_bytes)
        self.stores: list[tuple[str, bool]] = []  # (SOP Instance UID, on a DUL thread)
        self.events = 0
        self.fail_next = False

    def handle_store(self, event: evt.Event) -> int:
        self.events += 1
        return super().handle_store(event)

    def store(self, dataset: bytes, **request: Any) -> int:
        on_dul = isinstance(threading.current_thread(), DULServiceProvider)
        self.stores.append((request["sop_instance_uid"], on_dul))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("a handler bug")
        return super().store(dataset, **request)


def ct_instance(pixel_bytes: int | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(CT)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if pixel_bytes is not None:
        ds.Rows, ds.Columns, ds.BitsAllocated = 100, pixel_bytes // 200, 16
        ds.PixelData = bytes(pixel_bytes)
    return ds


@contextlib.contextmanager
def scp_and_requestor(
    tmp_path: Path, *, max_instance_bytes: int = 10**9, acceptor_max_pdu: int = 0
) -> Iterator[tuple[Recording, AE, int]]:
    spool = Spool(tmp_path / "spool")
    handler = Recording(spool, max_instance_bytes=max_instance_bytes)
    ae = scp.make_ae("LEAN")
    ae.maximum_pdu_size = acceptor_max_pdu
    port = free_port()
    server = scp.start_scp(ae, handler, "127.0.0.1", port)
    requestor = AE(ae_title="REQUESTOR")
    requestor.acse_timeout = requestor.dimse_timeout = requestor.network_timeout = 15
    requestor.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    requestor.add_requested_context(Verification)
    try:
        yield handler, requestor, port
    finally:
        server.shutdown()
        spool.close()


def spooled(tmp_path: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in (tmp_path / "spool" / "objects").rglob("*.dcm")}


def test_store_requests_are_served_on_the_dul_thread_between_echoes(tmp_path: Path) -> None:
    with scp_and_requestor(tmp_path) as (handler, requestor, port):
        requestor.maximum_pdu_size = 16382  # the data set in many PDUs
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        assert assoc.is_established
        sent = [ct_instance() for _ in range(3)]
        statuses = []
        for ds in sent:
            with reactor_parked(assoc):
                statuses.append(assoc.send_c_store(ds).Status)
            with reactor_parked(assoc):
                assert assoc.send_c_echo().Status == 0x0000  # pynetdicom's path, in between
        assoc.release()
        assert statuses == [0x0000] * 3
        assert handler.stores == [(ds.SOPInstanceUID, True) for ds in sent]
        assert handler.events == 0
        stored = spooled(tmp_path)
        for ds in sent:
            with BytesIO(stored[ds.SOPInstanceUID]) as data:
                back = pydicom.dcmread(data)
            assert back.PixelData == ds.PixelData and back.PatientName == ds.PatientName
        wait_until(lambda: handler._touched == {} or None, timeout=5)


def test_a_command_in_several_fragments_goes_through_pynetdicom(tmp_path: Path) -> None:
    # The acceptor's maximum PDU makes the requestor cut the command set into fragments.
    with scp_and_requestor(tmp_path, acceptor_max_pdu=64) as (handler, requestor, port):
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        ds = ct_instance()
        with reactor_parked(assoc):
            assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert handler.events == 1
        assert handler.stores == [(ds.SOPInstanceUID, False)]
        assert ds.SOPInstanceUID in spooled(tmp_path)


def test_debug_logging_handlers_take_pynetdicoms_path(tmp_path: Path) -> None:
    seen: list[Any] = []
    with scp_and_requestor(tmp_path) as (handler, requestor, port):
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        ds = ct_instance()
        # Bound on the acceptor's association, as pynetdicom's debug logging does.
        wait_until(lambda: handler_assoc(handler) or None, timeout=5)
        handler_assoc(handler).bind(evt.EVT_DIMSE_RECV, seen.append)
        with reactor_parked(assoc):
            assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert seen and handler.events == 1
        assert handler.stores == [(ds.SOPInstanceUID, False)]


def handler_assoc(handler: Recording) -> Any:
    """The SCP's side of the only association (found through its reactor threads)."""
    for thread in threading.enumerate():
        if isinstance(thread, DULServiceProvider) and thread.assoc.is_acceptor:
            return thread.assoc
    return None


def test_a_handler_that_raises_is_answered_c211_and_the_association_goes_on(
    tmp_path: Path,
) -> None:
    with scp_and_requestor(tmp_path) as (handler, requestor, port):
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        handler.fail_next = True
        first, second = ct_instance(), ct_instance()
        with reactor_parked(assoc):
            assert assoc.send_c_store(first).Status == STATUS_HANDLER_FAILED
        with reactor_parked(assoc):
            assert assoc.send_c_store(second).Status == 0x0000
        assoc.release()
        assert set(spooled(tmp_path)) == {second.SOPInstanceUID}


def test_an_oversized_data_set_is_dropped_as_it_arrives_and_refused(tmp_path: Path) -> None:
    with scp_and_requestor(tmp_path, max_instance_bytes=200_000) as (handler, requestor, port):
        requestor.maximum_pdu_size = 16382
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        big, small = ct_instance(pixel_bytes=1_000_000), ct_instance()
        with reactor_parked(assoc):
            assert assoc.send_c_store(big).Status == scp.STATUS_OUT_OF_RESOURCES
        with reactor_parked(assoc):
            assert assoc.send_c_store(small).Status == 0x0000
        assoc.release()
        # The big one never reached store(): it was refused on its size alone.
        assert handler.stores == [(small.SOPInstanceUID, True)]
        assert handler.rejected == 1
        assert set(spooled(tmp_path)) == {small.SOPInstanceUID}


def _pdv(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _store_command(message_id: int, instance: str) -> bytes:
    from tests.unit.test_dimse import _store_request_command

    return _store_request_command(message_id=message_id, instance=instance)


@pytest.mark.parametrize(
    "breaks_off",
    ["a command fragment", "another presentation context", "past the size limit"],
)
def test_a_data_set_that_breaks_off_is_handed_to_pynetdicom_and_nothing_is_stored(
    tmp_path: Path, breaks_off: str
) -> None:
    """What pynetdicom makes of the whole message decides, as it did before the lean path: it
    reads the first two as one C-STORE whose data set is garbage (refused); a data set already
    dropped for its size cannot be handed over, so that association is aborted."""
    limit = 1_000 if breaks_off == "past the size limit" else 10**9
    with scp_and_requestor(tmp_path, max_instance_bytes=limit) as (handler, requestor, port):
        assoc = requestor.associate("127.0.0.1", port, ae_title="LEAN")
        contexts = {str(cx.abstract_syntax): cx.context_id for cx in assoc.accepted_contexts}
        ct, echo = contexts[CTImageStorage], contexts[Verification]
        raw = assoc.dul.socket.socket
        raw.sendall(_pdv(ct, COMMAND_LAST, _store_command(1, "1.2.3.4")))
        raw.sendall(_pdv(ct, 0x00, b"\x08\x00\x16\x00" + b"x" * 2000))  # data, not the last
        if breaks_off == "another presentation context":
            raw.sendall(_pdv(echo, 0x02, b"\x08\x00\x18\x00\x00\x00\x00\x00"))
        else:
            raw.sendall(_pdv(ct, COMMAND_LAST, _store_command(2, "1.2.3.5")))
            try:
                raw.sendall(_pdv(ct, 0x02, b"\x08\x00\x18\x00\x00\x00\x00\x00"))
            except OSError:
                # Past the size limit the gateway aborts as soon as the second command breaks
                # the data set off: pynetdicom may have closed this socket already.
                if breaks_off != "past the size limit":
                    raise
        if breaks_off == "past the size limit":
            wait_until(lambda: (assoc.is_aborted or not assoc.is_alive()) or None, timeout=10)
            assert handler.events == 0
        else:
            wait_until(lambda: handler.rejected or None, timeout=10)
            assert handler.events == 1 and handler.rejected == 1
            assoc.abort()
        assert not any(on_dul for _, on_dul in handler.stores)
        assert handler.received == 0 and spooled(tmp_path) == {}
        assert echoscu(port, called_ae="LEAN").returncode == 0
