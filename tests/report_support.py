"""Helpers shared by the report tests: a sample report document and a fresh hub PKI.

Keys and CAs are generated into the tests' temporary folders, never committed.
"""

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imaging_hub.worklist.reports.pdf import ReportDocument
from imaging_hub.worklist.reports.pki import HubCA, UserCredential

PASSWORD = "correct horse 电池"
PATIENT_NAME = "张三丰"
FINDINGS = "两肺纹理增多，右下肺见斑片状影。\n<script>alert('x')</script> & <b>bold</b>"
IMPRESSION = "右下肺炎，建议抗炎治疗后复查。"


def key_image_png() -> bytes:
    image = Image.new("L", (256, 200))
    image.putdata([(x * 7 + y * 3) % 256 for y in range(200) for x in range(256)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sample_document(report_id: str = "RPT-0001", **changes: object) -> ReportDocument:
    fields: dict[str, object] = {
        "report_id": report_id,
        "hub_name": "城关区影像中心",
        "clinic_name": "青山镇卫生院",
        "patient_name": PATIENT_NAME,
        "patient_id": "P-20260001",
        "patient_sex": "男",
        "patient_birth_date": "1958-04-12",
        "modality": "DX",
        "body_part": "胸部 正侧位",
        "exam_date": "2026-03-02",
        "accession_number": "ACC-77",
        "clinical_question": "咳嗽、发热三天",
        "findings": FINDINGS,
        "impression": IMPRESSION,
        "radiologist_name": "李医生",
        "reported_at": "2026-03-02 10:12",
        "signed_at": "2026-03-02 10:15",
        "critical": True,
        "critical_category": "气胸",
        "key_image_png": key_image_png(),
    }
    fields.update(changes)
    return ReportDocument(**fields)  # type: ignore[arg-type]


@dataclass
class Pki:
    ca: HubCA
    credential: UserCredential
    directory: Path


def make_pki(directory: Path, username: str = "rad1", display_name: str = "李医生") -> Pki:
    ca = HubCA.create(directory / "ca", institution="城关区影像中心", key_size=2048)
    credential = ca.issue_signing_certificate(
        username=username, display_name=display_name, password=PASSWORD
    )
    return Pki(ca=ca, credential=credential, directory=directory)
