"""C-STORE of a signed report's Encapsulated PDF instance to a clinic DICOM node (a PACS, a
viewing station): the gateway acts as SCU, one association per instance.

The node is configured as ``AE@host:port`` (``report_node``); :func:`send_instance` raises
:class:`~imaging_hub.errors.ForwardError` (retryable) on any failure, so the caller retries with
back-off.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from imaging_hub.dicom.scu import association, send_parked
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)

_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: printable, no backslash
_NODE = re.compile(
    r"^(?P<ae>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$"
)
# DIMSE status: 0000 success, Bxxx warnings (coercion, elements discarded): the node kept it.
_WARNING = range(0xB000, 0xC000)


@dataclass(frozen=True)
class DicomNode:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "DicomNode":
        """``AE@host:port`` (an IPv6 host in brackets); ValueError if malformed."""
        found = _NODE.match(text.strip())
        if found is None:
            raise ValueError("report_node must be AE@host:port, e.g. PACS@192.168.1.20:104.")
        ae, host, port = found["ae"].strip(), found["host"].strip("[]"), int(found["port"])
        if not _AE.match(ae) or not ae.strip():
            raise ValueError("report_node: the AE title must be 1-16 printable characters.")
        if not 0 < port < 65536:
            raise ValueError("report_node: the port must be 1-65535.")
        return cls(ae_title=ae, host=host, port=port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def send_instance(path: Path, node: DicomNode, *, calling_ae: str, timeout: float = 30.0) -> None:
    """C-STORE the Part 10 file *path* to *node* in its own transfer syntax."""
    ds = dcmread(path)
    sop_class = str(ds.SOPClassUID)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    ae.add_requested_context(sop_class, str(ds.file_meta.TransferSyntaxUID))
    try:
        with association(
            ae, node.host, node.port, called_ae=node.ae_title, timeout=timeout, probe=True
        ) as assoc:
            if not assoc.is_established:
                raise ForwardError(f"{node} refused the association (or did not answer).")
            status = send_parked(assoc, assoc.send_c_store, ds)
    except OSError as exc:
        raise ForwardError(f"{node} could not be reached ({type(exc).__name__}).") from exc
    code = int(status.Status) if status and "Status" in status else None
    if code is None:
        raise ForwardError(f"{node} sent no C-STORE response (timeout or aborted).")
    if code != 0x0000 and code not in _WARNING:
        raise ForwardError(f"{node} answered C-STORE status 0x{code:04X}.")
