"""A DICOM sender (C-STORE and C-ECHO SCU) used by the demo to play the part of an X-ray machine."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging_hub.dicom.scu import association, send_parked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    sent: int
    failed: int


def send_files(
    files: Iterable[Path], *, host: str, port: int, called_ae: str, calling_ae: str = "MODALITY"
) -> SendResult:
    """Send *files* on one association, proposing each file's own transfer syntax."""
    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.network_timeout = 60
    proposed: set[tuple[str, str]] = set()
    for ds in datasets:
        pair = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if pair not in proposed:
            proposed.add(pair)
            ae.add_requested_context(pair[0], pair[1])
    if not proposed:
        ae.requested_contexts = StoragePresentationContexts[:1]
    sent = failed = 0
    with association(ae, host, port, called_ae=called_ae, timeout=60, probe=True) as assoc:
        if not assoc.is_established:
            raise ConnectionError(f"Association with {called_ae} at {host}:{port} failed.")
        for ds in datasets:
            status = send_parked(assoc, assoc.send_c_store, ds)
            if status and status.Status == 0x0000:
                sent += 1
            else:
                failed += 1
    return SendResult(sent=sent, failed=failed)


def echo(
    *, host: str, port: int, called_ae: str, calling_ae: str = "MODALITY", timeout: float = 5.0
) -> bool:
    """Whether the DICOM node at (host, port) answers a C-ECHO with Success.

    A node nobody listens on is answered False without pynetdicom, which logs two ERROR lines
    (and leaks its socket) for a refused connection — noise while a caller waits for a node."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    try:
        with association(ae, host, port, called_ae=called_ae, timeout=timeout, probe=True) as assoc:
            if not assoc.is_established:
                return False
            status = send_parked(assoc, assoc.send_c_echo)
            return status is not None and bool(status) and status.Status == 0x0000
    except OSError:
        return False
