"""The report PDF: Chinese embedded and rendered, markup printed as text, deterministic."""

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from imaging_hub.worklist.reports import pdf as report_pdf
from imaging_hub.worklist.reports.pdf import (
    InvalidKeyImage,
    ReportFontMissing,
    render_report_pdf,
)
from tests.report_support import PATIENT_NAME, sample_document


def _poppler() -> None:
    """poppler-utils is a test peer (scripts/install-peers.sh): missing is a failure, not a skip."""
    assert shutil.which("pdftoppm") and shutil.which("pdftotext"), "install poppler-utils"


def test_the_pdf_embeds_the_cjk_font_and_is_deterministic() -> None:
    data = render_report_pdf(sample_document())
    assert data.startswith(b"%PDF-")
    assert b"WenQuanYiMicroHei" in data  # the TrueType subset is embedded
    assert render_report_pdf(sample_document()) == data


def test_markup_in_findings_prints_as_text(tmp_path: Path) -> None:
    _poppler()
    path = tmp_path / "report.pdf"
    path.write_bytes(render_report_pdf(sample_document()))
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout
    assert PATIENT_NAME in text
    assert "<script>alert('x')</script> & <b>bold</b>" in text
    for label in ("青山镇卫生院", "P-20260001", "ACC-77", "危急值", "气胸", "李医生", "RPT-0001"):
        assert label in text
    assert "see verify" in text


def test_the_pdf_renders_chinese_glyphs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Rendered with pdftoppm and kept as an artefact (report-artefacts/report-1.png under the
    pytest temporary folder); the patient's name must show as Chinese, not as boxes."""
    _poppler()
    out = tmp_path_factory.mktemp("report-artefacts")
    (out / "report.pdf").write_bytes(render_report_pdf(sample_document()))
    subprocess.run(
        ["pdftoppm", "-png", "-r", "100", str(out / "report.pdf"), str(out / "report")],
        check=True,
    )
    page = out / "report-1.png"
    with Image.open(page) as image:
        assert image.width > 700
        histogram = image.convert("L").histogram()
        dark = sum(histogram[:128])
    assert dark > 5000  # text, table lines and the key image were drawn
    # The patient's name is text made of the embedded font's glyphs (not .notdef boxes).
    names = subprocess.run(
        ["pdffonts", str(out / "report.pdf")], capture_output=True, check=True, text=True
    ).stdout
    line = next(x for x in names.splitlines() if "WenQuanYiMicroHei" in x)
    assert line.split()[-5:-3] == ["yes", "yes"]  # embedded, as a subset


def test_addendum_title_and_no_key_image() -> None:
    data = render_report_pdf(
        sample_document("RPT-0002", addendum_of="RPT-0001", key_image_png=None)
    )
    assert data.startswith(b"%PDF-")


def test_a_bad_key_image_is_refused() -> None:
    with pytest.raises(InvalidKeyImage) as info:
        render_report_pdf(sample_document(key_image_png=b"not a png"))
    assert info.value.code == "invalid_key_image"


def test_a_missing_font_names_the_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(report_pdf, "FONT_DIRS", (tmp_path,))
    monkeypatch.delenv(report_pdf.FONT_ENV, raising=False)
    with pytest.raises(ReportFontMissing, match="fonts-wqy-microhei"):
        report_pdf.find_font()
