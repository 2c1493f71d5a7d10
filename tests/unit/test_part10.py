"""dicom.part10: the File Meta Information the gateway writes, byte for byte pynetdicom's."""

import io

import pydicom
import pytest
from pydicom.uid import UID, generate_uid
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from imaging_hub.dicom.part10 import file_meta_bytes, part10_bytes

# A typical generated UID, fixed: parameters must be the same in every pytest-xdist worker.
TYPICAL_UID = "1.2.826.0.1.3680043.8.498.26032996206823710201205287271025034501"


@pytest.mark.parametrize(
    ("sop_class", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"),  # odd, even lengths
        ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.1.2.4.80"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1.99"),
    ],
)
@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", TYPICAL_UID, "9" * 64])
def test_file_meta_matches_pynetdicom(sop_class: str, transfer_syntax: str, instance: str) -> None:
    expected = encode_file_meta(
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(instance),
            transfer_syntax=UID(transfer_syntax),
        )
    )
    ours = file_meta_bytes(
        sop_class_uid=sop_class,
        sop_instance_uid=instance,
        transfer_syntax_uid=transfer_syntax,
        implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    assert ours == expected


def test_part10_bytes_read_back_with_pydicom() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "王^小东"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPInstanceUID = generate_uid()
    body = io.BytesIO()
    pydicom.dcmwrite(body, ds, implicit_vr=False, little_endian=True)
    data = part10_bytes(
        body.getvalue(),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        implementation_uid="1.2.3.4",
        implementation_version="IH_1",
    )
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.ImplementationVersionName == "IH_1"
    assert back.PatientName == "王^小东"
