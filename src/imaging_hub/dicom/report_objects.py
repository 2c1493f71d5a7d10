"""The DICOM objects a signed report becomes in its study (each in a new series).

- :func:`build_encapsulated_pdf`: an Encapsulated PDF instance (PS3.3 A.45.1, SOP class
  1.2.840.10008.5.1.4.1.1.104.1) holding the signed PDF byte for byte. An odd-length PDF is
  padded with one NUL byte to the even length DICOM needs; Encapsulated Document Length
  (0042,0011) holds the true length, so :func:`encapsulated_pdf_bytes` gives back exactly the
  signed file (same SHA-256).
- :func:`build_report_sr`: an Enhanced SR following TID 2000 (Basic Diagnostic Imaging Report),
  built with highdicom: UTF-8 (ISO_IR 192), language of content, the radiologist as person
  observer, Findings (121070) and Impressions (121072) sections with TEXT items, VERIFIED (with
  the verifying observer), COMPLETE and FINAL; an addendum lists its predecessor documents.

Patient and study attributes are copied from a source dataset (an instance of the study) or a
mapping of keywords to values. UIDs come from :func:`imaging_hub.dicom.uids.new_uid`.
"""

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from imaging_hub.dicom.uids import new_uid, validate_uid

ENCAPSULATED_PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
ENHANCED_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.22"
UTF8 = "ISO_IR 192"
#: Series descriptions of the report objects: Chinese first (what the clinic's staff and the
#: radiologists read, in the viewer's series list and in a clinic PACS), English after it.
PDF_SERIES_DESCRIPTION = "影像诊断报告 Signed report (PDF)"
SR_SERIES_DESCRIPTION = "影像诊断报告 Signed report (SR)"

#: Attributes of the Patient and General Study modules copied into each report object.
PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
#: Type 2 attributes: present (possibly empty) in every report object.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)

# CID 7000: Diagnostic Imaging Report Document Titles.
REPORT_TITLE = ("18748-4", "LN", "Diagnostic imaging report")


def _plain(value: Any) -> Any:
    """A value as plain text (PersonName decoded with its source's character set)."""
    if isinstance(value, PersonName):
        return str(value)
    return value


def patient_study_attributes(source: Dataset | Mapping[str, Any]) -> Dataset:
    """A dataset with the patient/study attributes of *source*, as Unicode text (UTF-8 on
    write); the type 2 ones present, empty when the source lacks them."""
    out = Dataset()
    out.SpecificCharacterSet = UTF8
    for keyword in PATIENT_STUDY_KEYWORDS:
        if isinstance(source, Dataset):
            value = source.get(keyword) if keyword in source else None
        else:
            value = source.get(keyword)
        if value is not None and value != "":
            setattr(out, keyword, _plain(value))
        elif keyword in _TYPE2:
            setattr(out, keyword, "")
    validate_uid(out.get("StudyInstanceUID"), name="StudyInstanceUID")
    return out


def person_name(display_name: str) -> str:
    """A display name as a DICOM person name: a single-component name (a Chinese name written as
    one word) gets the trailing caret PS3.5 6.2.1.2 asks for; ``Family^Given`` stays."""
    name = display_name.strip()
    return name if "^" in name or "=" in name else f"{name}^"


def _da_tm(moment: datetime) -> tuple[str, str]:
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def build_encapsulated_pdf(
    pdf: bytes,
    source: Dataset | Mapping[str, Any],
    *,
    document_title: str,
    series_number: int = 9901,
    instance_number: int = 1,
    manufacturer: str = "imaging-hub",
    institution_name: str | None = None,
    content_datetime: datetime | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """An Encapsulated PDF instance, in a new series of *source*'s study, holding *pdf*."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("The document is not a PDF.")
    moment = (content_datetime or datetime.now(UTC)).astimezone(UTC)
    date, time = _da_tm(moment)
    ds = patient_study_attributes(source)
    sop_uid = sop_instance_uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ENCAPSULATED_PDF_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPClassUID = ENCAPSULATED_PDF_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_instance_uid or new_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = PDF_SERIES_DESCRIPTION
    ds.Manufacturer = manufacturer
    if institution_name:
        ds.InstitutionName = institution_name
    ds.ConversionType = "WSD"
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDateTime = f"{date}{time}"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = document_title
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = REPORT_TITLE
    ds.ConceptNameCodeSequence = DicomSequence([code])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds


def encapsulated_pdf_bytes(ds: Dataset) -> bytes:
    """The document of an Encapsulated PDF instance, exactly as it was encapsulated."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None and 0 <= int(length) <= len(data):
        return data[: int(length)]
    # No length recorded (another system's object): drop the one padding byte after %%EOF.
    if data.endswith(b"\x00"):
        return data[:-1]
    return data


def dataset_bytes(ds: Dataset) -> bytes:
    """*ds* as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_dataset_bytes(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def build_report_sr(
    source: Dataset,
    *,
    findings: str,
    impression: str,
    radiologist_name: str,
    organization: str,
    radiologist_login: str | None = None,
    language: tuple[str, str] = ("zh-CN", "Chinese (China)"),
    predecessors: Sequence[Dataset] = (),
    series_number: int = 9902,
    instance_number: int = 1,
    manufacturer: str = "imaging-hub",
    content_datetime: datetime | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """An Enhanced SR following TID 2000 with *findings* and *impression* as TEXT items.

    *source* is an instance of the study (the SR's evidence, and where patient and study
    attributes come from). *radiologist_name* is a DICOM person name (``Family^Given`` or a
    Chinese name as is). *predecessors* are the SRs an addendum amends (same study).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    evidence = patient_study_attributes(source)
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID"):
        if keyword not in source:
            raise ValueError(f"The source dataset has no {keyword}: it must be a study instance.")
        setattr(evidence, keyword, source[keyword].value)

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=person_name(radiologist_name),
            login_name=radiologist_login,
            organization_name=organization,
        ),
    )
    root = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept(*REPORT_TITLE), is_content_continuous=False, template_id="2000"
    )
    language_items = hd.sr.LanguageOfContentItemAndDescendants(
        language=hd.sr.CodedConcept(language[0], "RFC5646", language[1])
    )
    context = hd.sr.ObservationContext(observer_person_context=observer)

    def section(code: tuple[str, str, str], item: tuple[str, str, str], text: str) -> Any:
        container = hd.sr.ContainerContentItem(
            name=hd.sr.CodedConcept(*code),
            is_content_continuous=False,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        container.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.TextContentItem(
                    name=hd.sr.CodedConcept(*item),
                    value=text,
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            ]
        )
        return container

    items = [
        *language_items,
        *context,
        section(("121070", "DCM", "Findings"), ("121071", "DCM", "Finding"), findings),
        section(("121072", "DCM", "Impressions"), ("121073", "DCM", "Impression"), impression),
    ]
    root.ContentSequence = hd.sr.ContentSequence(items)

    moment = (content_datetime or datetime.now(UTC)).astimezone(UTC)
    date, time = _da_tm(moment)
    sr = hd.sr.EnhancedSR(
        evidence=[evidence],
        content=root,
        series_instance_uid=series_instance_uid or new_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or new_uid(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=True,
        is_verified=True,
        institution_name=organization,
        verifying_observer_name=person_name(radiologist_name),
        verifying_organization=organization,
        previous_versions=list(predecessors) or None,
        specific_character_set=UTF8,
        series_description=SR_SERIES_DESCRIPTION,
        content_date=date,
        content_time=time,
    )
    sr.SpecificCharacterSet = UTF8
    return sr


def sr_section_texts(sr: Dataset) -> dict[str, list[str]]:
    """TEXT values under each section of a report SR, by section code value (e.g. ``121070``)."""
    out: dict[str, list[str]] = {}
    for item in sr.get("ContentSequence", []):
        if item.get("ValueType") != "CONTAINER" or "ConceptNameCodeSequence" not in item:
            continue
        code = str(item.ConceptNameCodeSequence[0].CodeValue)
        texts = [
            str(child.TextValue)
            for child in item.get("ContentSequence", [])
            if child.get("ValueType") == "TEXT"
        ]
        out.setdefault(code, []).extend(texts)
    return out
