"""DICOM SCP of the gateway (PS3.4 Annex A Verification, Annex B Storage) on pynetdicom.

This is the only module of the gateway that imports pynetdicom. Handlers translate: they call
the domain (``dicom`` for validation, the spool for durability) and map the outcome to a DIMSE
status. Success (0x0000) is answered only after the spool has the instance fsync'd.
"""

import hashlib
import logging
import threading
import time
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from imaging_hub.dicom.attributes import parse_instance
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.errors import InvalidDicomError, SpoolError

log = logging.getLogger(__name__)

# DIMSE status codes (PS3.4 B.2.3, PS3.7 C).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110


class StoreHandler:
    """C-STORE and association events, bound to one spool (no globals)."""

    def __init__(self, spool: Spool, *, max_instance_bytes: int, on_stored: Any = None) -> None:
        self.spool = spool
        self.max_instance_bytes = max_instance_bytes
        self.on_stored = on_stored
        self._touched: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.received = 0
        self.rejected = 0

    def handle_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def handle_store(self, event: evt.Event) -> int:
        started = time.monotonic()
        calling = event.assoc.requestor.ae_title
        try:
            data = event.encoded_dataset()
        except Exception:
            log.warning("C-STORE from %s: dataset could not be encoded", calling)
            self.rejected += 1
            return STATUS_CANNOT_UNDERSTAND
        if len(data) > self.max_instance_bytes:
            log.warning(
                "C-STORE from %s refused: %d bytes exceed the limit of %d",
                calling,
                len(data),
                self.max_instance_bytes,
            )
            self.rejected += 1
            return STATUS_OUT_OF_RESOURCES
        try:
            info = parse_instance(data)
        except InvalidDicomError as exc:
            log.warning("C-STORE from %s refused: %s", calling, exc)
            self.rejected += 1
            return STATUS_CANNOT_UNDERSTAND
        if info.sop_class_uid != event.context.abstract_syntax:
            log.warning(
                "C-STORE from %s refused: SOP class %s sent on a %s presentation context",
                calling,
                info.sop_class_uid,
                event.context.abstract_syntax,
            )
            self.rejected += 1
            return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
        affected = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        if affected and affected != info.sop_instance_uid:
            log.warning("C-STORE from %s refused: SOP Instance UID mismatch", calling)
            self.rejected += 1
            return STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
        try:
            self.spool.put(
                data,
                sop_instance_uid=info.sop_instance_uid,
                study_instance_uid=info.study_instance_uid,
                series_instance_uid=info.series_instance_uid,
                sop_class_uid=info.sop_class_uid,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                sha256=hashlib.sha256(data).hexdigest(),
                calling_ae=calling,
            )
        except (SpoolError, InvalidDicomError) as exc:
            log.error("C-STORE from %s: spool failure: %s", calling, exc)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self._touched.setdefault(id(event.assoc), set()).add(info.study_instance_uid)
        self.received += 1
        log.debug(
            "stored %s (%d bytes) from %s in %.3fs",
            info.sop_instance_uid,
            len(data),
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


def make_ae(ae_title: str, *, allowed_calling_aes: list[str] | None = None) -> AE:
    """An AE accepting Verification and every storage SOP class in every transfer syntax."""
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = 32
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    if allowed_calling_aes:
        ae.require_calling_aet = list(allowed_calling_aes)
    return ae


def start_scp(ae: AE, handler: StoreHandler, host: str, port: int) -> ThreadedAssociationServer:
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handler.handle_echo),
        (evt.EVT_C_STORE, handler.handle_store),
        (evt.EVT_RELEASED, handler.handle_closed),
        (evt.EVT_ABORTED, handler.handle_closed),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False always returns the server
    return server
