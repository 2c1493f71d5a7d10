"""DICOM SCP of the gateway (PS3.4 Annex A Verification, Annex B Storage, Annex F MPPS) on
pynetdicom.

pynetdicom wiring and thin handlers: they call the domain (``dicom`` for validation, the spool
for durability) and map the outcome to a DIMSE status. Success (0x0000) is answered only after
the spool has the instance fsync'd. The optional fast C-STORE path that relies on pynetdicom's
internals lives in :mod:`imaging_hub.dicom_gateway.lean`; `start_scp` and `start_shared_scp`
install it (once per process) and bind it to every association when it is on.

Every association records, in the spool index, the studies it carries (before their first
instance is committed) and removes them when it ends (release, abort, connection closed): a study
is never complete while an association carrying it is open. MPPS N-CREATE / N-SET go to
:class:`imaging_hub.dicom_gateway.mpps.MppsSteps`.
"""

import logging
import os
import socket
import sqlite3
import ssl
import threading
import time
from typing import Any

from pydicom import Dataset
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
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from imaging_hub.dicom.checks import check_received_dataset
from imaging_hub.dicom.dimse import CANNOT_UNDERSTAND as STATUS_CANNOT_UNDERSTAND
from imaging_hub.dicom.dimse import (
    DATASET_DOES_NOT_MATCH_SOP_CLASS as STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS,
)
from imaging_hub.dicom.dimse import HANDLER_FAILED as STATUS_HANDLER_FAILED
from imaging_hub.dicom.dimse import OUT_OF_RESOURCES as STATUS_OUT_OF_RESOURCES
from imaging_hub.dicom.dimse import SUCCESS as STATUS_SUCCESS
from imaging_hub.dicom.mpps import MPPS_SOP_CLASS
from imaging_hub.dicom.mpps import PROCESSING_FAILURE as MPPS_PROCESSING_FAILURE
from imaging_hub.dicom.part10 import part10_header
from imaging_hub.dicom.vocabulary import RETIRED_STORAGE_SOP_CLASSES
from imaging_hub.dicom_gateway import lean, mwl
from imaging_hub.dicom_gateway.mpps import MppsOutcome, MppsSteps
from imaging_hub.dicom_gateway.spool import Spool
from imaging_hub.dicom_gateway.spool.space import REFUSED_COUNTER, is_no_space
from imaging_hub.errors import InvalidDicomError, SpoolError

log = logging.getLogger(__name__)

__all__ = [
    "STATUS_HANDLER_FAILED",
    "StoreHandler",
    "WorklistHandler",
    "make_ae",
    "start_scp",
    "start_shared_scp",
]

#: N-CREATE / N-SET failure "Resource limitation" (PS3.7 C.5): the index cannot be written.
STATUS_RESOURCE_LIMITATION = 0x0213

#: C-FIND statuses (PS3.4 C.4.1.1.4).
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
# The transfer syntaxes of the Modality Worklist context (a C-FIND carries no pixel data).
_FIND_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
]


class WorklistHandler:
    """Modality Worklist C-FIND (PS3.4 K), answered from the order cache (:mod:`.mwl`)."""

    def __init__(
        self,
        cache: mwl.OrderCache,
        *,
        character_sets: dict[str, str] | None = None,
        default_character_set: str = "ISO_IR 192",
    ) -> None:
        self.cache = cache
        self.character_sets = {k.strip(): v for k, v in (character_sets or {}).items()}
        self.default_character_set = default_character_set

    def handle_find(self, event: evt.Event) -> Any:
        """EVT_C_FIND: pending 0xFF00 per matching order, then success; a failure status
        for an identifier that cannot be matched (the association and the gateway go on)."""
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            orders = self.cache.orders()
        except Exception as exc:  # sqlite3.Error: the cache file is unreadable
            log.error("MWL C-FIND from %s: the order cache cannot be read: %s", calling, exc)
            yield STATUS_OUT_OF_RESOURCES, None
            return
        try:
            query = mwl.parse_query(event.identifier)
            matches = mwl.find(query, orders)
        except mwl.MalformedQuery as exc:
            log.warning("MWL C-FIND from %s refused (0x%04X): %s", calling, exc.status, exc)
            yield exc.status, None
            return
        except Exception as exc:  # pydicom's many ways of failing on hostile bytes
            log.warning(
                "MWL C-FIND from %s refused: the identifier is unreadable (%s)",
                calling,
                type(exc).__name__,
            )
            yield mwl.STATUS_IDENTIFIER_DOES_NOT_MATCH, None
            return
        charset = self.character_sets.get(calling, self.default_character_set)
        log.info("MWL C-FIND from %s: %d matching orders (%s)", calling, len(matches), charset)
        for order in matches:
            if event.is_cancelled:
                yield STATUS_CANCEL, None
                return
            yield STATUS_PENDING, mwl.answer(query, order, charset)


class StoreHandler:
    """C-STORE and association events, bound to one spool (no globals)."""

    worklist: WorklistHandler | None = None  # Modality Worklist C-FIND, when set (service.py)

    def __init__(
        self,
        spool: Spool,
        *,
        max_instance_bytes: int,
        on_stored: Any = None,
        on_refused: Any = None,
        mpps: MppsSteps | None = None,
        on_mpps: Any = None,
    ) -> None:
        """*on_stored* is called after each stored instance and each association's end,
        *on_mpps* with the :class:`MppsOutcome` of each accepted MPPS change."""
        self.spool = spool
        self.max_instance_bytes = max_instance_bytes
        self.on_stored = on_stored
        self.on_refused = on_refused
        self.mpps = mpps if mpps is not None else MppsSteps(spool.index)
        self.on_mpps = on_mpps
        self._touched: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.received = 0
        self.rejected = 0

    def handle_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _refuse(self, status: int) -> int:
        self.rejected += 1
        if self.on_refused is not None:
            try:
                self.on_refused()
            except Exception as exc:  # sqlite3.Error on a full disk: the refusal stands
                log.debug("refusal not counted: %s", exc)
        return status

    def _refuse_no_space(self) -> int:
        """0xA700 for want of space on the spool's file system (logged by the guard, once
        per episode), counted apart for the alarm."""
        try:
            self.spool.count(REFUSED_COUNTER)
        except Exception as exc:  # sqlite3.Error: the disk is that full
            log.debug("refusal not counted: %s", exc)
        return self._refuse(STATUS_OUT_OF_RESOURCES)

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
        # The free-space floor, before anything is written (spool/space.py).
        if not self.spool.space.admit(size, calling=calling):
            return self._refuse_no_space()
        try:
            return self._store_admitted(
                header,
                dataset,
                size=size,
                started=started,
                calling=calling,
                association=association,
                abstract_syntax=abstract_syntax,
                transfer_syntax_uid=transfer_syntax_uid,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
            )
        finally:
            self.spool.space.done(size)

    def _store_admitted(
        self,
        header: bytes,
        dataset: bytes,
        *,
        size: int,
        started: float,
        calling: str,
        association: int,
        abstract_syntax: str,
        transfer_syntax_uid: str,
        sop_class_uid: str,
        sop_instance_uid: str,
    ) -> int:
        """`store` once the free-space floor let the instance in."""
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
            self._carrying(association, info.study_instance_uid, calling)
            self.spool.commit(
                staged,
                sop_instance_uid=info.sop_instance_uid,
                study_instance_uid=info.study_instance_uid,
                series_instance_uid=info.series_instance_uid,
                sop_class_uid=info.sop_class_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                calling_ae=calling,
                priority=checked.priority,
                accession_number=checked.accession_number,
            )
        except (SpoolError, InvalidDicomError) as exc:
            self.spool.discard(staged)  # not stored: nothing of it stays in tmp/
            if is_no_space(exc):
                self.spool.space.no_space(exc, calling=calling)
                return self._refuse_no_space()
            log.error("C-STORE from %s: spool failure: %s", calling, exc)
            return STATUS_OUT_OF_RESOURCES
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

    def _carrying(self, association: int, study_uid: str, calling: str) -> None:
        """Record (once per association and study, before its instance is committed) that
        the association carries the study: it is not complete while the association is open."""
        with self._lock:
            touched = self._touched.setdefault(association, set())
            if study_uid in touched:
                return
            touched.add(study_uid)
        try:
            self.spool.association_opened(_association_key(association), study_uid, calling)
        except Exception as exc:  # sqlite3.Error: the commit that follows reports the spool
            with self._lock:
                touched.discard(study_uid)  # recorded at the association's next instance
            raise SpoolError(f"The open association could not be recorded: {exc}") from exc

    def handle_closed(self, event: evt.Event) -> None:
        """EVT_RELEASED, EVT_ABORTED and EVT_CONN_CLOSE (whichever comes first does it)."""
        with self._lock:
            studies = self._touched.pop(id(event.assoc), None)
        if studies is None:
            return
        self.spool.association_closed(_association_key(id(event.assoc)))
        log.info(
            "association from %s closed: %d studies touched",
            event.assoc.requestor.ae_title,
            len(studies),
        )
        if self.on_stored is not None:
            self.on_stored()  # a study it held may be complete now

    # --- MPPS (PS3.4 F.7): thin handlers, the domain is dicom_gateway.mpps ----------------

    def handle_n_create(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        calling = event.assoc.requestor.ae_title
        requested = getattr(event.request, "AffectedSOPInstanceUID", None)
        try:
            attributes = event.attribute_list
        except Exception:
            log.warning("MPPS N-CREATE from %s: the data set cannot be decoded", calling)
            return _mpps_status(MppsOutcome(MPPS_PROCESSING_FAILURE, comment="Undecodable")), None
        try:
            outcome = self.mpps.create(
                str(requested) if requested else None, attributes, calling_ae=calling
            )
        except sqlite3.Error as exc:  # the index cannot be written (a full disk)
            outcome = _mpps_not_recorded("N-CREATE", calling, exc)
        self._mpps_changed(outcome)
        reply = Dataset()
        if outcome.ok and not requested:
            reply.AffectedSOPInstanceUID = outcome.mpps_uid  # the SCP assigned it
        return _mpps_status(outcome), reply

    def handle_n_set(self, event: evt.Event) -> tuple[Dataset, Dataset | None]:
        calling = event.assoc.requestor.ae_title
        uid = str(getattr(event.request, "RequestedSOPInstanceUID", "") or "")
        try:
            changes = event.modification_list
        except Exception:
            log.warning("MPPS N-SET from %s: the data set cannot be decoded", calling)
            return _mpps_status(MppsOutcome(MPPS_PROCESSING_FAILURE, comment="Undecodable")), None
        try:
            outcome = self.mpps.update(uid, changes, calling_ae=calling)
        except sqlite3.Error as exc:  # the index cannot be written (a full disk)
            outcome = _mpps_not_recorded("N-SET", calling, exc)
        self._mpps_changed(outcome)
        return _mpps_status(outcome), Dataset()

    def _mpps_changed(self, outcome: MppsOutcome) -> None:
        if outcome.ok and self.on_mpps is not None:
            self.on_mpps(outcome)

    def handle_rejected(self, event: evt.Event) -> None:
        log.warning(
            "association from %s (%s) rejected: calling AE title not allowed or no resources",
            event.assoc.requestor.ae_title,
            event.assoc.requestor.address,
        )


def _mpps_not_recorded(what: str, calling: str, exc: sqlite3.Error) -> MppsOutcome:
    """An MPPS change the spool index could not record (nothing changed): Resource
    limitation (0x0213), the modality sends it again."""
    log.error(
        "MPPS %s from %s not recorded: the spool index cannot be written: %s", what, calling, exc
    )
    comment = "Gateway disk full" if is_no_space(exc) else "Gateway index unavailable"
    return MppsOutcome(STATUS_RESOURCE_LIMITATION, comment=comment)


def _association_key(association: int) -> str:
    """An association's name in the spool index, unique among the spool's SCP processes."""
    return f"{os.getpid()}:{association}"


def _mpps_status(outcome: MppsOutcome) -> Dataset:
    """The status of an N-CREATE / N-SET response, with its Error Comment and Error ID."""
    status = Dataset()
    status.Status = outcome.status
    if not outcome.ok:
        if outcome.comment:
            status.ErrorComment = outcome.comment
        if outcome.error_id is not None:
            status.ErrorID = outcome.error_id
    return status


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


def _affected_uid(event: evt.Event) -> str:
    """The Affected SOP Instance UID of the request (for log lines and the UID check)."""
    return str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")


def _register_storage_class(uid: str) -> None:
    """Route C-STOREs of a SOP class pynetdicom does not know to its Storage service class."""
    if pynetdicom_sop_class.uid_to_service_class(uid) is not StorageServiceClass:
        pynetdicom_sop_class.register_uid(
            uid, "ImagingHubStorage_" + uid.replace(".", "_"), StorageServiceClass
        )


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
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        # pynetdicom's own event logging (a handler on every PDU and message) only writes at
        # INFO and DEBUG: unbound, it costs nothing. Enable the logger to get it back.
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = 32
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(ModalityWorklistInformationFind, _FIND_TRANSFER_SYNTAXES)
    ae.add_supported_context(MPPS_SOP_CLASS)  # N-CREATE / N-SET (PS3.4 F.7)
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


def _event_handlers(handler: StoreHandler, *, use_lean: bool) -> list[Any]:
    """The SCP's handlers; with *use_lean*, `lean.install` is called (once per process) and,
    if the lean path is on, bound to every association."""
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handler.handle_echo),
        (evt.EVT_C_STORE, handler.handle_store),
        (evt.EVT_RELEASED, handler.handle_closed),
        (evt.EVT_ABORTED, handler.handle_closed),
        (evt.EVT_CONN_CLOSE, handler.handle_closed),
        (evt.EVT_N_CREATE, handler.handle_n_create),
        (evt.EVT_N_SET, handler.handle_n_set),
        (evt.EVT_REJECTED, handler.handle_rejected),
    ]
    if handler.worklist is not None:
        handlers.append((evt.EVT_C_FIND, handler.worklist.handle_find))
    if use_lean and lean.install():
        handlers += [
            (evt.EVT_CONN_OPEN, lean.attach, [handler]),
            (evt.EVT_CONN_CLOSE, lean.detach),
        ]
    return handlers


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
    use_lean: bool = True,
) -> ThreadedAssociationServer:
    """Serve on (host, port); with *ssl_context*, every association runs over TLS.

    This is the gateway SCP's serve entry: with *use_lean* it installs the lean C-STORE path
    in this process (`lean.install`: idempotent, refused on an unsupported pynetdicom).
    """
    if ssl_context is not None:
        tls_server = ae.make_server(
            (host, port),
            ssl_context=ssl_context,
            evt_handlers=_event_handlers(handler, use_lean=use_lean),
            server_class=TlsAssociationServer,
        )
        ae._servers.append(tls_server)  # as AE.start_server does: shutdown() removes it again
        thread = threading.Thread(target=tls_server.serve_forever, name="scp-acceptor", daemon=True)
        thread.start()
        return tls_server
    server = ae.start_server(
        (host, port), block=False, evt_handlers=_event_handlers(handler, use_lean=use_lean)
    )
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
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)  # workers race for each connection; losers get EAGAIN
    except BaseException:
        sock.close()  # e.g. the port is taken: no socket left open behind the error
        raise
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
    use_lean: bool = True,
) -> ThreadedAssociationServer:
    """Serve on *sock*, shared with other workers; ``loads[index]`` counts our associations.

    The serve entry of an SCP worker process: installs the lean path as `start_scp` does."""

    def closed(event: evt.Event) -> None:
        with loads.get_lock():
            loads[index] = max(0, loads[index] - 1)

    server_class = type(
        "BoundSharedSocketServer",
        (SharedSocketServer,),
        {"shared_socket": sock, "loads": loads, "index": index},
    )
    handlers = [
        *_event_handlers(handler, use_lean=use_lean),
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
