"""Issue 3, bad input: each refused with a DIMSE failure status (or association reject), a log
line naming UIDs and AE titles only, nothing in the spool, and the next association served.

One real gateway process (``imaging-hub gateway serve``) for the module; its hub URL points at
a closed port, since nothing here may reach forwarding. The modality is pynetdicom sending the
bytes of each file untouched (tests.peers.scu), or dcmtk's echoscu.
"""

import io
import os
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.config import disable_value_validation
from pydicom.uid import generate_uid

from imaging_hub.dicom.samples import __file__ as samples_init
from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu
from tests.peers.hub import GatewayProcess
from tests.peers.net import free_port, wait_until
from tests.peers.scu import part10, send_files

CT = Path(samples_init).parent / "CT_small.dcm"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
SIZE_LIMIT = 4_000_000
PATIENT = "Bad^Input"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("bad-input")
    port = free_port()
    env = dict(
        os.environ,
        IMAGING_HUB_GATEWAY_CLINIC="clinic-a",
        IMAGING_HUB_GATEWAY_AE_TITLE="CLINIC_A",
        IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
        IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
        IMAGING_HUB_GATEWAY_SPOOL_DIR=str(root / "spool"),
        IMAGING_HUB_GATEWAY_HUB_URL=f"http://127.0.0.1:{free_port()}",  # nobody listens
        IMAGING_HUB_GATEWAY_HUB_TOKEN="not-used-here",
        IMAGING_HUB_GATEWAY_MAX_INSTANCE_BYTES=str(SIZE_LIMIT),
        IMAGING_HUB_GATEWAY_ALLOWED_CALLING_AES='["GOOD_SCU", "ECHOSCU"]',
        IMAGING_HUB_GATEWAY_STABILITY_SECONDS="1",
    )
    process = GatewayProcess(
        clinic="clinic-a",
        ae_title="CLINIC_A",
        port=port,
        spool_dir=root / "spool",
        log_path=root / "gateway.log",
        env=env,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
    assert PATIENT not in process.log_path.read_text()  # never a patient name in the log


def ct_dataset(**changes: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(CT)
    ds.PatientName = PATIENT
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs on purpose
        with disable_value_validation():
            for keyword, value in changes.items():
                if value is None:
                    delattr(ds, keyword)
                else:
                    setattr(ds, keyword, value)
    return ds


def strip_meta(data: bytes) -> bytes:
    """The data set of a Part-10 file: what travels in C-STORE (no preamble, no File Meta)."""
    assert data[128:132] == b"DICM"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def dataset_bytes(ds: pydicom.Dataset) -> bytes:
    """The data set alone, in its file's transfer syntax (Explicit VR Little Endian here)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with disable_value_validation():
            ds.save_as(out, enforce_file_format=True)
    return strip_meta(out.getvalue())


def spooled(gateway: GatewayProcess, sop_instance_uid: str) -> bool:
    index = gateway.spool_dir / "index.sqlite3"
    with sqlite3.connect(f"file:{index}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
        ).fetchone()
    files = list((gateway.spool_dir / "objects").rglob(f"{sop_instance_uid}.dcm"))
    return row is not None or bool(files)


def send_one(
    gateway: GatewayProcess,
    tmp_path: Path,
    dataset: bytes,
    *,
    meta_uid: str,
    sop_class: str = CT_CLASS,
    ts: str = EXPLICIT_LE,
) -> int | None:
    path = part10(
        tmp_path / f"{meta_uid[-20:]}.dcm",
        dataset,
        sop_class_uid=sop_class,
        sop_instance_uid=meta_uid,
        transfer_syntax=ts,
    )
    return send_files(gateway.port, [path], contexts=[(sop_class, ts)])[0]


def assert_refused(
    gateway: GatewayProcess, tmp_path: Path, status: int | None, expected: int, sop_uid: str
) -> None:
    assert status == expected
    assert not spooled(gateway, sop_uid)
    # The refused instance's staged copy is gone too (it was written while being checked).
    assert not list((gateway.spool_dir / "tmp").iterdir())
    wait_until(
        lambda: (
            ("refused" in gateway.log_path.read_text() and sop_uid in gateway.log_path.read_text())
            or None
        ),
        timeout=5,
    )
    # ... and the next association is served.
    good = ct_dataset()
    ok = send_one(gateway, tmp_path, dataset_bytes(good), meta_uid=str(good.SOPInstanceUID))
    assert ok == SUCCESS
    assert spooled(gateway, str(good.SOPInstanceUID))


def test_not_dicom_bytes(gateway: GatewayProcess, tmp_path: Path) -> None:
    uid = generate_uid()
    junk = b"this is a clinic's shopping list, not an image\n" * 40
    status = send_one(gateway, tmp_path, junk, meta_uid=uid)
    assert_refused(gateway, tmp_path, status, CANNOT_UNDERSTAND, uid)


def test_truncated_native_pixel_data(gateway: GatewayProcess, tmp_path: Path) -> None:
    ds = ct_dataset()
    data = dataset_bytes(ds)
    uid = str(ds.SOPInstanceUID)
    status = send_one(gateway, tmp_path, data[:-1000], meta_uid=uid)
    assert_refused(gateway, tmp_path, status, CANNOT_UNDERSTAND, uid)


def test_pixel_data_shorter_than_the_image(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Complete element lengths, but fewer pixel bytes than Rows x Columns x 2 need."""
    ds = ct_dataset()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    uid = str(ds.SOPInstanceUID)
    status = send_one(gateway, tmp_path, dataset_bytes(ds), meta_uid=uid)
    assert_refused(gateway, tmp_path, status, CANNOT_UNDERSTAND, uid)


def test_encapsulated_stream_ends_early(gateway: GatewayProcess, tmp_path: Path) -> None:
    source = pydicom.dcmread(SAMPLES / "by-modality" / "CR" / "RG2_JLSL.dcm")
    ds = ct_dataset()
    source.StudyInstanceUID = ds.StudyInstanceUID
    source.SeriesInstanceUID = ds.SeriesInstanceUID
    source.SOPInstanceUID = ds.SOPInstanceUID
    source.PatientName = PATIENT
    cut = dataset_bytes(source)[:-20_000]  # the last fragment and the delimiter are gone
    uid = str(ds.SOPInstanceUID)
    status = send_one(
        gateway, tmp_path, cut, meta_uid=uid, sop_class=CR_CLASS, ts="1.2.840.10008.1.2.4.80"
    )
    assert_refused(gateway, tmp_path, status, CANNOT_UNDERSTAND, uid)


def test_sop_class_does_not_match_presentation_context(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    ds = ct_dataset()  # a CT data set, sent on a CR presentation context
    uid = str(ds.SOPInstanceUID)
    status = send_one(gateway, tmp_path, dataset_bytes(ds), meta_uid=uid, sop_class=CR_CLASS)
    assert status == DOES_NOT_MATCH
    assert not spooled(gateway, uid)
    wait_until(lambda: "presentation context" in gateway.log_path.read_text() or None, timeout=5)
    good = ct_dataset()
    assert send_one(gateway, tmp_path, dataset_bytes(good), meta_uid=good.SOPInstanceUID) == 0


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyInstanceUID", None),
        ("StudyInstanceUID", "../.."),
        ("StudyInstanceUID", "1." + "2" * 63),  # 65 characters
        ("SeriesInstanceUID", None),
        ("SeriesInstanceUID", "1.2/../../etc"),
        ("SOPInstanceUID", "../../1.2"),
        ("SOPInstanceUID", "1." + "3" * 63),
    ],
)
def test_missing_or_invalid_uids(
    gateway: GatewayProcess, tmp_path: Path, keyword: str, value: str | None
) -> None:
    ds = ct_dataset(**{keyword: value})
    meta_uid = generate_uid()  # a valid UID for the request; the data set carries the bad one
    status = send_one(gateway, tmp_path, dataset_bytes(ds), meta_uid=meta_uid)
    assert_refused(gateway, tmp_path, status, CANNOT_UNDERSTAND, meta_uid)
    assert not list((gateway.spool_dir / "objects").rglob("*..*"))
    assert not (gateway.spool_dir.parent / "etc").exists()


def test_instance_over_the_size_limit(gateway: GatewayProcess, tmp_path: Path) -> None:
    ds = ct_dataset(ImageComments="x" * (SIZE_LIMIT + 10))
    uid = str(ds.SOPInstanceUID)
    status = send_one(gateway, tmp_path, dataset_bytes(ds), meta_uid=uid)
    assert status == OUT_OF_RESOURCES
    assert not spooled(gateway, uid)
    wait_until(lambda: "exceed the limit" in gateway.log_path.read_text() or None, timeout=5)
    good = ct_dataset()
    assert send_one(gateway, tmp_path, dataset_bytes(good), meta_uid=good.SOPInstanceUID) == 0


def test_unknown_calling_ae_is_rejected(gateway: GatewayProcess, tmp_path: Path) -> None:
    refused = echoscu(gateway.port, called_ae="CLINIC_A", calling_ae="INTRUDER")
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr + refused.stdout
    with pytest.raises(ConnectionError):
        send_files(gateway.port, [], contexts=[(CT_CLASS, EXPLICIT_LE)], calling_ae="INTRUDER")
    wait_until(lambda: "INTRUDER" in gateway.log_path.read_text() or None, timeout=5)
    assert "rejected" in gateway.log_path.read_text()
    assert echoscu(gateway.port, called_ae="CLINIC_A", calling_ae="ECHOSCU").returncode == 0


# --- mutated real samples ------------------------------------------------------------------

FUZZ_SOURCES = [
    CT,
    SAMPLES / "by-modality" / "MR" / "MR_small.dcm",
    SAMPLES / "by-transfer-syntax" / "rle" / "OBXXXX1A_rle.dcm",
    SAMPLES / "by-modality" / "SR" / "test-SR.dcm",
    SAMPLES / "malformed" / "MR_small_trailing_padding.dcm",
    SAMPLES / "by-modality" / "CR" / "RG2_JLSL.dcm",
]


Mutation = tuple[str, float, bytes]
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
        st.floats(min_value=0.0, max_value=1.0),
        st.binary(min_size=1, max_size=16),
    ),
    min_size=0,
    max_size=4,
)


def fresh_sample(source: Path) -> tuple[str, bytes, pydicom.Dataset]:
    """The sample with a new SOP Instance UID (the spool is keyed by it): UID, data set, meta."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return str(ds.SOPInstanceUID), strip_meta(out.getvalue()), ds.file_meta


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    out = bytearray(data)
    for kind, where, chunk in mutations:
        at = int(where * max(0, len(out) - 1))
        if kind == "flip" and out:
            out[at] ^= chunk[0] or 0xFF
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = chunk
        else:
            out[at : at + len(chunk)] = chunk
    return bytes(out)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(FUZZ_SOURCES), mutations=MUTATIONS)
def test_mutated_samples_get_an_answer_and_the_gateway_stays_up(
    gateway: GatewayProcess, source: Path, mutations: list[Mutation]
) -> None:
    uid, original, meta = fresh_sample(source)
    data = mutate(original, mutations)
    sop_class = str(meta.MediaStorageSOPClassUID)
    ts = str(meta.TransferSyntaxUID)
    directory = gateway.spool_dir.parent / "fuzz"
    directory.mkdir(exist_ok=True)
    path = part10(
        directory / f"{uid}.dcm",
        data,
        sop_class_uid=sop_class,
        sop_instance_uid=uid,
        transfer_syntax=ts,
    )
    status = send_files(gateway.port, [path], contexts=[(sop_class, ts)])[0]
    assert status in (SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES, DOES_NOT_MATCH)
    if status == SUCCESS:
        # Acknowledged means durably in the spool, byte for byte as sent.
        assert spooled(gateway, uid)
        (stored,) = (gateway.spool_dir / "objects").rglob(f"{uid}.dcm")
        assert stored.read_bytes().endswith(data)
    else:
        assert not spooled(gateway, uid)
    if not mutations:
        assert status == SUCCESS  # the real samples themselves are accepted
    assert gateway.proc is not None and gateway.proc.poll() is None
