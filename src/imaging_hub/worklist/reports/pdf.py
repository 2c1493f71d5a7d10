"""The report PDF (reportlab), with WenQuanYi Micro Hei embedded so Chinese prints everywhere.

Input is a :class:`ReportDocument` of plain strings: reportlab's ``Paragraph`` parses a markup
language, so every text is escaped here and HTML or script in findings prints as text. The PDF is
built in reportlab's *invariant* mode (fixed document ID and dates; the signing time lives in the
signature), so the same document gives the same bytes.

The PDF cannot hold the SHA-256 of its own signed file: the verification line names the report id
and how to verify (the hub's ``report verify`` command or URL); the API returns the SHA-256.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from imaging_hub.errors import ImagingHubError

FONT_NAME = "WQYMicroHei"
FONT_FILE = "wqy-microhei.ttc"
FONT_ENV = "IMAGING_HUB_REPORT_FONT"
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/wqy"),
    Path("/usr/share/fonts/wqy-microhei"),
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
)


class ReportFontMissing(ImagingHubError):
    """The CJK font the report PDF embeds is not installed."""

    code = "report_font_missing"


class InvalidKeyImage(ImagingHubError):
    """The key image is not a readable PNG."""

    code = "invalid_key_image"


@dataclass(frozen=True)
class ReportDocument:
    """Everything printed on a report. All texts are plain strings (never markup)."""

    report_id: str
    hub_name: str
    clinic_name: str
    patient_name: str
    patient_id: str
    patient_sex: str
    patient_birth_date: str
    modality: str
    body_part: str
    exam_date: str
    accession_number: str
    clinical_question: str
    findings: str
    impression: str
    radiologist_name: str
    reported_at: str
    signed_at: str
    critical: bool = False
    critical_category: str = ""
    key_image_png: bytes | None = None
    #: How to verify: a URL of the hub, or the command; printed on the verification line.
    verify_hint: str = "imaging-hub report verify <file>.pdf --trust ca.pem"
    #: The report id of the signed report this one amends (an addendum), if any.
    addendum_of: str | None = None


def find_font(explicit: Path | None = None) -> Path:
    """The WenQuanYi Micro Hei file: *explicit*, ``$IMAGING_HUB_REPORT_FONT``, or the usual
    font folders; :class:`ReportFontMissing` (naming the Debian package) when absent."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    if os.environ.get(FONT_ENV):
        candidates.append(Path(os.environ[FONT_ENV]))
    candidates += [d / FONT_FILE for d in FONT_DIRS]
    for path in candidates:
        if path.is_file():
            return path
    for folder in FONT_DIRS:
        if folder.is_dir():
            for path in sorted(folder.rglob(FONT_FILE)):
                return path
    raise ReportFontMissing(
        f"The report font {FONT_FILE} (WenQuanYi Micro Hei) is not installed: install the Debian "
        f"package fonts-wqy-microhei, or point {FONT_ENV} at the file."
    )


_registered: set[str] = set()


def _register_font(path: Path) -> None:
    if FONT_NAME in _registered:
        return
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont(FONT_NAME, str(path), subfontIndex=0))
    _registered.add(FONT_NAME)


def _text(value: str) -> str:
    """Plain text → Paragraph markup: escaped, line breaks kept."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "<br/>".join(escape(line, {'"': "&quot;"}) for line in lines)


def _key_image(png: bytes, max_width: float, max_height: float) -> object:
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    try:
        with PILImage.open(io.BytesIO(png)) as im:
            if im.format != "PNG":
                raise InvalidKeyImage("The key image must be a PNG.")
            width, height = im.size
    except InvalidKeyImage:
        raise
    except Exception as exc:  # PIL raises many types for bad bytes
        raise InvalidKeyImage("The key image is not a readable PNG.") from exc
    scale = min(max_width / width, max_height / height, 1.0)
    return Image(io.BytesIO(png), width=width * scale, height=height * scale)


def render_report_pdf(doc: ReportDocument, *, font: Path | None = None) -> bytes:
    """The report as PDF bytes (A4, one or more pages), ready to be signed."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    _register_font(find_font(font))
    base = ParagraphStyle("base", fontName=FONT_NAME, fontSize=10, leading=14, wordWrap="CJK")
    title = ParagraphStyle(
        "title", parent=base, fontSize=16, leading=22, alignment=TA_CENTER, spaceAfter=2
    )
    subtitle = ParagraphStyle("subtitle", parent=base, alignment=TA_CENTER, textColor=colors.grey)
    heading = ParagraphStyle(
        "heading", parent=base, fontSize=11.5, leading=16, spaceBefore=8, spaceAfter=3
    )
    small = ParagraphStyle("small", parent=base, fontSize=8, leading=11, textColor=colors.grey)
    critical_style = ParagraphStyle(
        "critical", parent=base, fontSize=11, leading=15, textColor=colors.white
    )

    def p(value: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(_text(value), style)

    def label(zh: str, en: str) -> Paragraph:
        return Paragraph(f'{escape(zh)} <font size="7" color="grey">{escape(en)}</font>', base)

    buffer = io.BytesIO()
    frame_width = A4[0] - 36 * mm
    template = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=f"Imaging report {doc.report_id}",
        author=doc.radiologist_name,
        subject=f"{doc.modality} {doc.body_part}",
        creator="imaging-hub",
        invariant=True,
        lang="zh-CN",
    )
    story: list[object] = [
        p(doc.hub_name, subtitle),
        Paragraph(
            "影像诊断报告补充 Addendum" if doc.addendum_of else "影像诊断报告 Imaging Report", title
        ),
    ]
    if doc.addendum_of:
        story.append(p(f"补充报告 Amends report {doc.addendum_of}", subtitle))
    story.append(Spacer(1, 4 * mm))

    rows = [
        [
            label("送检机构", "Clinic"),
            p(doc.clinic_name),
            label("检查号", "Accession"),
            p(doc.accession_number),
        ],
        [
            label("姓名", "Patient"),
            p(doc.patient_name),
            label("患者编号", "Patient ID"),
            p(doc.patient_id),
        ],
        [
            label("性别", "Sex"),
            p(doc.patient_sex),
            label("出生日期", "Birth date"),
            p(doc.patient_birth_date),
        ],
        [
            label("检查类型", "Modality"),
            p(doc.modality),
            label("检查部位", "Body part"),
            p(doc.body_part),
        ],
        [
            label("检查日期", "Exam date"),
            p(doc.exam_date),
            label("报告编号", "Report ID"),
            p(doc.report_id),
        ],
    ]
    col = frame_width / 4
    info = Table(rows, colWidths=[col * 0.75, col * 1.25, col * 0.75, col * 1.25])
    info.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.lightgrey),
                ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
                ("BACKGROUND", (2, 0), (2, -1), colors.whitesmoke),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(info)

    if doc.critical:
        text = "危急值 Critical result"
        if doc.critical_category:
            text += f": {doc.critical_category}"
        box = Table([[p(text, critical_style)]], colWidths=[frame_width])
        box.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#b00020"))]))
        story += [Spacer(1, 3 * mm), box]

    story += [
        Paragraph("临床问题 <font size='8' color='grey'>Clinical question</font>", heading),
        p(doc.clinical_question or "—"),
        Paragraph("影像所见 <font size='8' color='grey'>Findings</font>", heading),
        p(doc.findings or "—"),
        Paragraph("诊断意见 <font size='8' color='grey'>Impression</font>", heading),
        p(doc.impression or "—"),
    ]
    if doc.key_image_png:
        story += [
            Paragraph("关键图像 <font size='8' color='grey'>Key image</font>", heading),
            _key_image(doc.key_image_png, frame_width * 0.6, 70 * mm),
        ]

    sign_rows = [
        [label("报告医师", "Radiologist"), p(doc.radiologist_name)],
        [label("报告时间", "Reported"), p(doc.reported_at)],
        [label("签发时间", "Signed"), p(doc.signed_at)],
    ]
    sign = Table(sign_rows, colWidths=[col * 0.9, col * 3.1])
    sign.setStyle(TableStyle([("LINEABOVE", (0, 0), (-1, 0), 0.6, colors.grey)]))
    story += [Spacer(1, 6 * mm), sign, Spacer(1, 4 * mm)]
    story.append(
        p(
            f"本报告经数字签名 (PAdES)。报告编号 Report ID {doc.report_id} · "
            f"SHA-256 of the signed file: see verify · {doc.verify_hint}",
            small,
        )
    )
    template.build(story)
    return buffer.getvalue()
