"""A modality written with pynetdicom, for tests that need each C-STORE's status.

``send_files`` sends files *as they are* (pynetdicom's chunked mode: the File Meta picks the
presentation context, the data set bytes after it go on the wire untouched), so broken bytes
reach the gateway exactly as a broken modality would send them. ``part10`` builds such files.
"""

import io
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, _config

from imaging_hub.dicom.scu import association, send_parked


@contextmanager
def chunked_sending() -> Iterator[None]:
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def part10(
    path: Path, dataset: bytes, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str
) -> Path:
    """Write a Part-10 file: preamble, valid File Meta, then *dataset* bytes exactly."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue() + dataset)
    return path


def send_files(
    port: int,
    files: Sequence[Path],
    *,
    contexts: Iterable[tuple[str, str]],
    called_ae: str = "CLINIC_A",
    calling_ae: str = "GOOD_SCU",
    on_status: object = None,
    timeout: float = 30,
) -> list[int | None]:
    """Send *files* on one association; the status of each (None: no answer, association gone).

    *timeout* bounds every wait for the peer (a killed peer costs at most that long).
    """
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, ts in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, ts)
    statuses: list[int | None] = []
    with (
        chunked_sending(),
        association(ae, "127.0.0.1", port, called_ae=called_ae, timeout=timeout) as assoc,
    ):
        if not assoc.is_established:
            raise ConnectionError("The association was not established.")
        for path in files:
            if not assoc.is_established:
                statuses.append(None)
                continue
            answer = send_parked(assoc, assoc.send_c_store, path)
            status = int(answer.Status) if answer and "Status" in answer else None
            statuses.append(status)
            if callable(on_status):
                on_status(path, status)
    return statuses
