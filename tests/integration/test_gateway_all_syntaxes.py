"""Issue 3, must show: dcmtk's storescu sends every shared sample of every transfer syntax (and
multi-frame US/XA, secondary capture, SR and an Encapsulated PDF) through a real gateway to a
real hub; each arrives pixel-identical, and byte-identical where the gateway did not transcode.

The samples get fresh Study/Series/SOP Instance UIDs first (several share UIDs across transfer
syntaxes, and some carry none); pydicom re-saves them in their own transfer syntax, leaving
the pixel data bytes as they were.
"""

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.worklist.db.models import Instance
from tests.conftest import SAMPLES
from tests.peers.dcmtk import storescu
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.net import wait_until
from tests.peers.scu import send_files

# Real-world files: pydicom warns about their quirks (odd charsets, UIDs); reading is tolerant.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

# The list: Implicit/Explicit VR Little Endian, Explicit VR Big Endian, Deflated, JPEG
# Baseline/Extended/Lossless SV1, JPEG-LS lossless and near-lossless, JPEG 2000 lossless and
# lossy, RLE Lossless.
# Its encapsulated Pixel Data has a broken delimiter (dcmtk: "Sequence Delimitation Item
# missing"): the gateway must refuse it, not pass it on.
MALFORMED_US = "GH364_US.dcm"
PRIVATE_CLASS = "2.25.152752519834663263826301420581341174218"
REQUIRED_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
}
MODALITY_GROUPS = {"US", "XA", "SC", "SR"}
# JPEG XL (PS3.5 2024) is not among the syntaxes and pydicom 3.0 cannot write it back.
LEFT_OUT_GROUPS = {"jpeg-xl"}
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def corpus() -> list[Path]:
    with (SAMPLES / "INDEX.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        SAMPLES / r["path"]
        for r in rows
        if (r["category"] == "by-transfer-syntax" and r["group"] not in LEFT_OUT_GROUPS)
        or (r["category"] == "by-modality" and r["group"] in MODALITY_GROUPS)
    ]


def renamed(source: Path, out: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source)
        for tag in [t for t in list(ds.keys()) if t.group == 0xFFFE]:
            del ds[tag]  # stray item/delimiter tags (two US files) cannot be written back
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out, enforce_file_format=True)
    return out


def encapsulated_pdf(out: Path) -> Path:
    ds = pydicom.Dataset()
    ds.SOPClassUID = PDF_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.PatientName = "PDF^Report"
    ds.PatientID = "PDF-1"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n% a tiny document\n%%EOF\n"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return out


def storescu_successes(stderr: str) -> set[Path]:
    """Files storescu -v reports a Success response for."""
    done: set[Path] = set()
    current: Path | None = None
    for line in stderr.splitlines():
        if line.startswith("I: Sending file: "):
            current = Path(line.removeprefix("I: Sending file: ").strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
    return done


def frames(data: bytes) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
        if "PixelData" not in ds:
            return None
        try:
            return ds.pixel_array
        except Exception:  # no decoder here for this syntax (e.g. JPEG XL): compare bytes
            return None


def test_every_transfer_syntax_arrives_pixel_identical(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    sources = corpus()
    assert len(sources) > 40  # 45 in tests/data today: every syntax and the modality groups
    (tmp_path / "send").mkdir()
    files = [renamed(p, tmp_path / "send" / f"{n:03d}.dcm") for n, p in enumerate(sources)]
    files.append(encapsulated_pdf(tmp_path / "send" / "pdf.dcm"))
    syntaxes = {
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files
    }
    assert syntaxes >= REQUIRED_SYNTAXES
    # Issue1097_DeflatedWithSQ.dcm uses a private SOP class: accepted once configured.
    gateway = start_gateway(hub, extra_storage_sop_classes=f'["{PRIVATE_CLASS}"]')

    run = storescu(gateway.port, files, called_ae=gateway.ae_title, timeout=300)
    answered = storescu_successes(run.stderr)
    # dcmtk cannot send a few files at all (HTJ2K and JPEG Lossless P14, which are not in the
    # issue's list, and one US file dcmtk finds malformed): pynetdicom sends those as they are.
    unsent = [f for f in files if f not in answered]
    assert all(
        str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        not in REQUIRED_SYNTAXES - {"1.2.840.10008.1.2.4.80"}
        for f in unsent
    ), unsent
    assert len(unsent) <= 6, run.stderr[-3000:]
    source_of = dict(zip(files, sources, strict=False))
    for f in unsent:
        meta = pydicom.dcmread(f, stop_before_pixels=True).file_meta
        pair = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        status = send_files(gateway.port, [f], contexts=[pair], calling_ae="STORESCU")
        if source_of.get(f, f).name == MALFORMED_US:
            assert status == [0xC000]  # refused, as dcmtk refuses it
            files.remove(f)
        else:
            assert status == [0], f

    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}

    def arrived() -> dict[str, str] | None:
        with hub.sessions() as session:
            rows = session.execute(
                select(Instance.sop_instance_uid, Instance.object_key).where(
                    Instance.sop_instance_uid.in_(list(by_uid))
                )
            ).all()
        return {r[0]: r[1] for r in rows} if len(rows) == len(by_uid) else None

    keys = wait_until(arrived, timeout=180, interval=1)
    assert isinstance(keys, dict)
    transcoded = 0
    for uid, path in by_uid.items():
        stored = (hub.data_dir / "objects" / keys[uid]).read_bytes()
        (spooled,) = (gateway.spool_dir / "objects").rglob(f"{uid}.dcm")
        received = spooled.read_bytes()
        expected = frames(path.read_bytes())
        if stored != received:  # transcoded for the WAN: lossless, so every pixel is the same
            transcoded += 1
            ts = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
            assert str(ts.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80", path
            assert expected is not None, path
        if expected is not None:
            got = frames(stored)
            assert got is not None and np.array_equal(got, expected), path
    # The native images went over the WAN as JPEG-LS (6 with pixels in tests/data today; the
    # palette-colour US one may travel as it is).
    assert transcoded >= 5
