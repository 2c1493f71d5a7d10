"""The bundled demo samples: licence-clean, intact copies of the shared corpus, readable."""

from __future__ import annotations

import csv
import hashlib
import pathlib
import re

import pydicom

from imaging_hub.dicom.samples import sample_files, sample_studies
from imaging_hub.dicom.uids import is_valid_uid
from tests.conftest import SAMPLES

BUNDLED = pathlib.Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "dicom" / "samples"
ALLOWED_LICENCE = re.compile(r"^(MIT|BSD)")


def _index() -> list[dict[str, str]]:
    assert (SAMPLES / "INDEX.csv").is_file(), f"shared samples missing at {SAMPLES}"
    text = (SAMPLES / "INDEX.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def _readme_licences() -> dict[str, str]:
    readme = (BUNDLED / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- licences -->")[1].split("<!-- /licences -->")[0]
    pairs = re.findall(r"^- (\S+\.dcm): (.+)$", block, flags=re.MULTILINE)
    return {name: licence.strip() for name, licence in pairs}


def test_every_bundled_file_is_listed_with_an_mit_or_bsd_licence() -> None:
    licences = _readme_licences()
    names = {p.name for p in sample_files()}
    assert names == set(licences)
    for name, licence in licences.items():
        assert ALLOWED_LICENCE.match(licence), f"{name} has licence {licence}"


def test_bundled_files_are_byte_copies_of_mit_or_bsd_corpus_files() -> None:
    by_sha = {row["sha256"]: row for row in _index()}
    for path in sample_files():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest in by_sha, f"{path.name} is not a byte copy of a corpus file"
        row = by_sha[digest]
        assert ALLOWED_LICENCE.match(row["license"]), f"{path.name}: {row['license']}"
        assert row["category"] != "malformed"
        assert row["source_repo"] in (BUNDLED / "README.md").read_text(encoding="utf-8")


def test_licence_texts_are_kept() -> None:
    texts = sorted(p.name for p in (BUNDLED / "LICENSES").iterdir())
    assert texts == ["pydicom-data.txt", "pydicom.txt"]
    assert "MIT" in (BUNDLED / "LICENSES" / "pydicom.txt").read_text(encoding="utf-8")


def test_bundle_is_small_and_covers_the_demo_needs() -> None:
    files = sample_files()
    assert sum(p.stat().st_size for p in files) < 3 * 1024 * 1024
    modalities = {str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in files}
    assert modalities & {"CR", "DX"}
    assert modalities & {"CT", "US"}


def test_chinese_names_decode() -> None:
    names = {p.name: p for p in sample_files()}
    utf8 = pydicom.dcmread(names["chrX1_UTF8_Chinese.dcm"])
    gb = pydicom.dcmread(names["chrX2_GB18030_Chinese.dcm"])
    assert utf8.SpecificCharacterSet == "ISO_IR 192"
    assert gb.SpecificCharacterSet == "GB18030"
    assert str(utf8.PatientName) == "Wang^XiaoDong=王^小東"
    assert utf8.PatientName.ideographic == "王^小東"
    assert str(gb.PatientName) == "Wang^XiaoDong=王^小东"
    assert gb.PatientName.ideographic == "王^小东"


def test_sample_studies_groups_every_file_by_study_instance_uid() -> None:
    studies = sample_studies()
    grouped = sorted(p for paths in studies.values() for p in paths)
    assert grouped == sorted(sample_files())
    for uid, paths in studies.items():
        assert is_valid_uid(uid)
        for path in paths:
            assert pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID == uid


def test_every_bundled_image_decodes() -> None:
    for path in sample_files():
        ds = pydicom.dcmread(path)
        assert ds.pixel_array.size > 0
