"""The exam catalogue: the exam types a township clinic orders (package data ``catalogue.json``).

Each exam type names its modality, body part (DICOM Body Part Examined), the number of images it
normally makes (0: unknown, e.g. a CT or an ultrasound) and its name in Chinese and English. An
order of an exam type takes its modality, body part and expected image count from here, and its
Requested Procedure Description from the Chinese name (what the modality's worklist shows).
"""

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources

from imaging_hub.worklist.access.caller import Caller

READ = "order.read"
LANGUAGES = ("zh-CN", "en")
_CODE = re.compile(r"^[A-Z0-9_]{1,32}$")
_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")


@dataclass(frozen=True)
class ExamType:
    code: str
    modality: str
    body_part: str
    expected_images: int
    name_zh: str
    name_en: str

    def name(self, language: str) -> str:
        return self.name_en if language == "en" else self.name_zh


@dataclass(frozen=True)
class ExamTypeView:
    """An exam type as the API answers it: ``name`` in the caller's language, ``names`` in both
    (the browser switches language without asking again)."""

    code: str
    modality: str
    body_part_examined: str
    expected_images: int
    name: str
    names: dict[str, str]


@dataclass(frozen=True)
class ExamTypeList:
    language: str
    exam_types: list[ExamTypeView]


def _load(text: str) -> dict[str, ExamType]:
    data = json.loads(text)
    found: dict[str, ExamType] = {}
    for item in data["exam_types"]:
        exam = ExamType(
            code=str(item["code"]),
            modality=str(item["modality"]),
            body_part=str(item["body_part"]),
            expected_images=int(item["expected_images"]),
            name_zh=str(item["names"]["zh-CN"]),
            name_en=str(item["names"]["en"]),
        )
        if (
            _CODE.fullmatch(exam.code) is None
            or _CS.fullmatch(exam.modality) is None
            or _CS.fullmatch(exam.body_part) is None
            or exam.expected_images < 0
            or not 0 < len(exam.name_zh) <= 64  # Requested Procedure Description (LO)
            or not exam.name_en
            or exam.code in found
        ):
            raise ValueError(f"The exam catalogue's entry {exam.code!r} is not valid.")
        found[exam.code] = exam
    return found


@functools.cache
def exam_types() -> dict[str, ExamType]:
    """The catalogue by code, in the file's order (read once per process)."""
    text = (resources.files(__package__ or __name__) / "catalogue.json").read_text("utf-8")
    return _load(text)


def exam_type(code: str) -> ExamType | None:
    return exam_types().get(code.strip().upper())


def list_exam_types(caller: Caller, *, language: str) -> ExamTypeList:
    """The catalogue in *language* (``zh-CN`` or ``en``), for anyone who reads orders."""
    caller.require(READ)
    language = language if language in LANGUAGES else "zh-CN"
    return ExamTypeList(
        language=language,
        exam_types=[
            ExamTypeView(
                code=e.code,
                modality=e.modality,
                body_part_examined=e.body_part,
                expected_images=e.expected_images,
                name=e.name(language),
                names={"zh-CN": e.name_zh, "en": e.name_en},
            )
            for e in exam_types().values()
        ],
    )
