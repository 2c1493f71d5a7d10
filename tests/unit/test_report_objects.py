"""The report's DICOM objects: Encapsulated PDF byte for byte, TID 2000 SR with Chinese intact."""

import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset

from imaging_hub.dicom.report_objects import (
    ENCAPSULATED_PDF_SOP_CLASS,
    ENHANCED_SR_SOP_CLASS,
    build_encapsulated_pdf,
    build_report_sr,
    dataset_bytes,
    encapsulated_pdf_bytes,
    read_dataset_bytes,
    sr_section_texts,
)
from imaging_hub.dicom.uids import is_valid_uid
from tests.report_support import FINDINGS, IMPRESSION

SAMPLE = (
    Path(__file__).resolve().parents[2] / "src/imaging_hub/dicom/samples/chrX2_GB18030_Chinese.dcm"
)


@pytest.fixture(scope="module")
def source() -> Dataset:
    return pydicom.dcmread(SAMPLE, stop_before_pixels=True)


@pytest.mark.parametrize("extra", [b"", b"\n"])  # even and odd lengths
def test_the_encapsulated_pdf_round_trips_byte_for_byte(source: Dataset, extra: bytes) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF" + extra
    ds = build_encapsulated_pdf(pdf, source, document_title="影像诊断报告")
    back = read_dataset_bytes(dataset_bytes(ds))
    assert back.SOPClassUID == ENCAPSULATED_PDF_SOP_CLASS
    assert len(back.EncapsulatedDocument) % 2 == 0
    assert back.EncapsulatedDocumentLength == len(pdf)
    assert encapsulated_pdf_bytes(back) == pdf
    assert back.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    assert is_valid_uid(back.SOPInstanceUID) and is_valid_uid(back.SeriesInstanceUID)
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == str(source.PatientName)  # GB18030 in, UTF-8 out, same name
    assert back.DocumentTitle == "影像诊断报告"
    assert back.SeriesDescription == "影像诊断报告 Signed report (PDF)"  # Chinese first, UTF-8


def test_patient_and_study_from_a_mapping() -> None:
    ds = build_encapsulated_pdf(
        b"%PDF-1.4\n%%EOF",
        {"PatientName": "张^三", "PatientID": "P1", "StudyInstanceUID": "1.2.3.4"},
        document_title="报告",
    )
    back = read_dataset_bytes(dataset_bytes(ds))
    assert str(back.PatientName) == "张^三" and back.StudyInstanceUID == "1.2.3.4"
    assert back.AccessionNumber == ""  # type 2: present, empty


def test_the_sr_follows_tid_2000_with_chinese_intact(source: Dataset) -> None:
    sr = build_report_sr(
        source,
        findings=FINDINGS,
        impression=IMPRESSION,
        radiologist_name="李医生",
        radiologist_login="rad1",
        organization="城关区影像中心",
    )
    data = dataset_bytes(sr)
    parsed = hd.sr.srread(io.BytesIO(data))
    assert parsed.SOPClassUID == ENHANCED_SR_SOP_CLASS
    assert parsed.SpecificCharacterSet == "ISO_IR 192"
    assert (parsed.VerificationFlag, parsed.CompletionFlag, parsed.PreliminaryFlag) == (
        "VERIFIED",
        "COMPLETE",
        "FINAL",
    )
    assert str(parsed.VerifyingObserverSequence[0].VerifyingObserverName) == "李医生^"
    assert parsed.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert parsed.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    texts = sr_section_texts(parsed)
    assert texts["121070"] == [FINDINGS]
    assert texts["121072"] == [IMPRESSION]
    plain = pydicom.dcmread(io.BytesIO(data))
    assert sr_section_texts(plain)["121070"] == [FINDINGS]
    kinds = [
        (item.RelationshipType, item.ConceptNameCodeSequence[0].CodeValue)
        for item in plain.ContentSequence
    ]
    assert ("HAS CONCEPT MOD", "121049") in kinds  # language of content
    assert ("HAS OBS CONTEXT", "121005") in kinds  # observer type: person
    assert ("HAS OBS CONTEXT", "121008") in kinds  # person observer name
    assert plain.StudyInstanceUID == source.StudyInstanceUID
    assert plain.SeriesInstanceUID != source.SeriesInstanceUID
    assert plain.SeriesDescription == "影像诊断报告 Signed report (SR)"
    assert "PredecessorDocumentsSequence" not in plain


def test_an_addendum_sr_references_its_predecessor(source: Dataset) -> None:
    first = build_report_sr(
        source,
        findings=FINDINGS,
        impression=IMPRESSION,
        radiologist_name="李医生",
        organization="城关区影像中心",
    )
    addendum = build_report_sr(
        source,
        findings="补充：左侧少量胸腔积液。",
        impression="同前，另见左侧少量胸腔积液。",
        radiologist_name="李医生",
        organization="城关区影像中心",
        predecessors=[first],
    )
    parsed = hd.sr.srread(io.BytesIO(dataset_bytes(addendum)))
    study = parsed.PredecessorDocumentsSequence[0]
    assert study.StudyInstanceUID == first.StudyInstanceUID
    ref = study.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == ENHANCED_SR_SOP_CLASS


def test_the_sr_needs_a_study_instance() -> None:
    with pytest.raises(ValueError, match="study instance"):
        build_report_sr(
            _study_only(), findings="x", impression="y", radiologist_name="A^B", organization="H"
        )


def _study_only() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    return ds
