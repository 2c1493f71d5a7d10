"""dicom.dimse: the C-STORE response Command Set the gateway encodes, byte for byte pynetdicom's."""

import pytest
from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from imaging_hub.dicom.dimse import store_response_command


def _pynetdicom(message_id: int, sop_class: str, instance: str, status: int) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 0))
    ((context_id, pdv),) = pdata.presentation_data_value_list
    assert context_id == 1 and pdv[:1] == b"\x03"  # the last (only) command fragment
    return bytes(pdv[1:])


@pytest.mark.parametrize(
    "sop_class", ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1"]
)  # even and odd lengths
@pytest.mark.parametrize("instance", ["1.2.3", "1.2.34", generate_uid(), "9" * 64])
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000, 0x0110, 0xB000])
@pytest.mark.parametrize("message_id", [1, 2, 255, 65535])
def test_store_response_matches_pynetdicom(
    sop_class: str, instance: str, status: int, message_id: int
) -> None:
    ours = store_response_command(
        message_id=message_id, sop_class_uid=sop_class, sop_instance_uid=instance, status=status
    )
    assert ours == _pynetdicom(message_id, sop_class, instance, status)
