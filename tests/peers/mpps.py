"""A modality's MPPS side written with pynetdicom: N-CREATE (IN PROGRESS) and N-SET (COMPLETED /
DISCONTINUED) data sets as PS3.4 F.7.2 has them, and a small SCU that sends them (and C-STOREs)
on one association, returning each status as the peer answered it."""

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from imaging_hub.dicom.samples import __file__ as samples_init
from imaging_hub.dicom.scu import association, send_parked

MPPS = "1.2.840.10008.3.1.2.3.3"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
CT = Path(samples_init).parent / "CT_small.dcm"


def create_attributes(
    study_uid: str, *, accession: str = "", status: str = "IN PROGRESS"
) -> Dataset:
    """An N-CREATE Attribute List with every Type 1 attribute of PS3.4 Table F.7.2-1."""
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = accession
    step.RequestedProcedureID = "RP1"
    step.ScheduledProcedureStepID = "SPS1"
    step.ScheduledProcedureStepDescription = ""
    step.ReferencedStudySequence = DicomSequence([])
    ds.ScheduledStepAttributesSequence = DicomSequence([step])
    ds.PatientName = "Test^Patient"
    ds.PatientID = "P1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ReferencedPatientSequence = DicomSequence([])
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT_ROOM1"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    now = datetime.now()
    ds.PerformedProcedureStepStartDate = now.strftime("%Y%m%d")
    ds.PerformedProcedureStepStartTime = now.strftime("%H%M%S")
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "CT chest"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = DicomSequence([])
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = DicomSequence([])
    ds.PerformedSeriesSequence = DicomSequence([])
    return ds


def final_attributes(
    series: dict[str, list[tuple[str, str]]],
    *,
    status: str = "COMPLETED",
    reason: str = "",
) -> Dataset:
    """An N-SET Modification List ending the step; *series*: series UID -> [(class, instance)]."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    now = datetime.now()
    ds.PerformedProcedureStepEndDate = now.strftime("%Y%m%d")
    ds.PerformedProcedureStepEndTime = now.strftime("%H%M%S")
    items = []
    for series_uid, instances in series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ProtocolName = "Chest"
        item.PerformingPhysicianName = ""
        item.OperatorsName = ""
        item.SeriesDescription = ""
        item.RetrieveAETitle = ""
        refs = []
        for sop_class, sop_instance in instances:
            ref = Dataset()
            ref.ReferencedSOPClassUID = sop_class
            ref.ReferencedSOPInstanceUID = sop_instance
            refs.append(ref)
        item.ReferencedImageSequence = DicomSequence(refs)
        item.ReferencedNonImageCompositeSOPInstanceSequence = DicomSequence([])
        items.append(item)
    ds.PerformedSeriesSequence = DicomSequence(items)
    if reason:
        code = Dataset()
        code.CodeValue = "110514"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = reason
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = DicomSequence([code])
    return ds


@dataclass(frozen=True)
class Instance:
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    data: bytes


def ct_instances(study_uid: str, n: int, *, accession: str = "") -> list[Instance]:
    """*n* small CT instances of one new series of *study_uid* (Part-10 bytes)."""
    series = generate_uid()
    out = []
    for _ in range(n):
        ds = pydicom.dcmread(CT)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.AccessionNumber = accession
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(Instance(CT_IMAGE, str(ds.SOPInstanceUID), series, buf.getvalue()))
    return out


def referenced(instances: Sequence[Instance]) -> dict[str, list[tuple[str, str]]]:
    series: dict[str, list[tuple[str, str]]] = {}
    for item in instances:
        series.setdefault(item.series_instance_uid, []).append(
            (item.sop_class_uid, item.sop_instance_uid)
        )
    return series


class Modality:
    """One association to the gateway carrying MPPS, C-STORE and C-ECHO."""

    def __init__(self, assoc: Association) -> None:
        self.assoc = assoc

    def create(self, uid: str | None, attributes: Dataset) -> tuple[int, Dataset | None]:
        """N-CREATE; (status, the response's status data set with Error Comment/ID)."""
        answer = send_parked(self.assoc, self.assoc.send_n_create, attributes, MPPS, uid)
        status = answer[0] if answer else None
        return int(status.Status) if status else -1, status

    def set(self, uid: str, changes: Dataset) -> tuple[int, Dataset | None]:
        answer = send_parked(self.assoc, self.assoc.send_n_set, changes, MPPS, uid)
        status = answer[0] if answer else None
        return int(status.Status) if status else -1, status

    def store(self, instance: Instance) -> int:
        ds = pydicom.dcmread(io.BytesIO(instance.data))
        answer = send_parked(self.assoc, self.assoc.send_c_store, ds)
        return int(answer.Status) if answer and "Status" in answer else -1

    def echo(self) -> int:
        answer = send_parked(self.assoc, self.assoc.send_c_echo)
        return int(answer.Status) if answer and "Status" in answer else -1


@contextmanager
def modality(port: int, *, called_ae: str = "CLINIC_A", timeout: float = 20) -> Iterator[Modality]:
    """An association with MPPS, CT Image Storage and Verification; released at the end."""
    ae = AE(ae_title="CT_ROOM1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    for abstract in (MPPS, CT_IMAGE, VERIFICATION):
        ae.add_requested_context(abstract, syntaxes)
    with association(ae, "127.0.0.1", port, called_ae=called_ae, timeout=timeout) as assoc:
        if not assoc.is_established:
            raise ConnectionError("The association was not established.")
        yield Modality(assoc)
