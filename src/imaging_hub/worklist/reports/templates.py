"""Report templates as data: per exam type, in Chinese and English, with coded sections.

In the spirit of IHE MRRT: a template names the exams it fits (modalities, body parts), and
holds sections, each with a heading, a pick-list of ready phrases and a "normal" text. Each
section is coded with the TID 2000 section it belongs to — Findings (121070) or Impressions
(121072) — so the report pane can compose the findings and impression texts the SR carries.

The built-in templates are JSON files in ``worklist/reports/templates/`` (package data); an
administrator can import more (:func:`import_template`), kept in the ``report_templates`` table.
Both are validated by :class:`TemplateIn`.
"""

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import ReportTemplate

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
#: TID 2000 sections a template section may map to: (code value, scheme, meaning) → field.
SECTION_CONCEPTS = {"121070": "findings", "121072": "impression"}
CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
#: Audit action of an import (detail.op: created, replaced).
TEMPLATE_IMPORTED = "report.template_imported"


ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=4000)]


class Localized(BaseModel):
    """One text in both languages."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    zh_cn: LongText = Field(alias="zh-CN")
    en: LongText

    def text(self, language: str) -> str:
        return self.en if language == "en" else self.zh_cn


class LocalizedTitle(Localized):
    zh_cn: ShortText = Field(alias="zh-CN")
    en: ShortText


class Concept(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Literal["121070", "121072"]
    scheme: Literal["DCM"] = "DCM"
    meaning: ShortText


class SectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=CODE_PATTERN)
    concept: Concept
    title: LocalizedTitle
    normal: Localized
    picklist: list[Localized] = Field(default_factory=list, max_length=100)


class TemplateIn(BaseModel):
    """A report template (what the JSON files hold and what an administrator imports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=CODE_PATTERN)
    version: int = Field(default=1, ge=1, le=1_000_000)
    modalities: list[Annotated[str, Field(pattern=r"^[A-Z]{2,16}$")]] = Field(max_length=20)
    body_parts: list[Annotated[str, Field(pattern=r"^[A-Z][A-Z_ ]{0,15}$")]] = Field(
        default_factory=list, max_length=50
    )
    title: LocalizedTitle
    sections: list[SectionIn] = Field(min_length=2, max_length=40)

    @field_validator("modalities")
    @classmethod
    def _some_modality(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a template names at least one modality")
        return value

    @model_validator(mode="after")
    def _sections(self) -> "TemplateIn":
        codes = [s.code for s in self.sections]
        if len(set(codes)) != len(codes):
            raise ValueError("section codes must be unique within a template")
        mapped = {s.concept.value for s in self.sections}
        if mapped != set(SECTION_CONCEPTS):
            raise ValueError("a template needs findings (121070) and impression (121072) sections")
        return self


# --- what the API answers (one language) ----------------------------------------------------


@dataclass(frozen=True)
class TemplateSection:
    code: str
    #: ``findings`` or ``impression``: the report field (and TID 2000 section) it fills.
    field: str
    concept_code: str
    title: str
    normal: str
    picklist: tuple[str, ...]


@dataclass(frozen=True)
class TemplateView:
    code: str
    version: int
    language: str
    title: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    #: Whether it fits the modality/body part asked for (matching templates come first).
    matches: bool
    builtin: bool
    sections: tuple[TemplateSection, ...]


def _view(t: TemplateIn, language: str, *, matches: bool, builtin: bool) -> TemplateView:
    return TemplateView(
        code=t.code,
        version=t.version,
        language=language,
        title=t.title.text(language),
        modalities=tuple(t.modalities),
        body_parts=tuple(t.body_parts),
        matches=matches,
        builtin=builtin,
        sections=tuple(
            TemplateSection(
                code=s.code,
                field=SECTION_CONCEPTS[s.concept.value],
                concept_code=s.concept.value,
                title=s.title.text(language),
                normal=s.normal.text(language),
                picklist=tuple(p.text(language) for p in s.picklist),
            )
            for s in t.sections
        ),
    )


@functools.cache
def builtin_templates() -> dict[str, TemplateIn]:
    """The templates shipped in the package, by code (validated once per process)."""
    folder = resources.files("imaging_hub.worklist.reports") / "templates"
    found: dict[str, TemplateIn] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            t = TemplateIn.model_validate(json.loads(entry.read_text(encoding="utf-8")))
            found[t.code] = t
    return found


def _imported(session: Session) -> dict[str, TemplateIn]:
    out: dict[str, TemplateIn] = {}
    for row in session.scalars(select(ReportTemplate).order_by(ReportTemplate.code)):
        try:
            out[row.code] = TemplateIn.model_validate(row.data)
        except ValidationError:  # pragma: no cover - rows are validated on import
            continue
    return out


def all_templates(session: Session) -> dict[str, tuple[TemplateIn, bool]]:
    """Every template by code, with whether it is built in."""
    found = {code: (t, True) for code, t in builtin_templates().items()}
    found.update({code: (t, False) for code, t in _imported(session).items()})
    return found


def template_exists(session: Session, code: str) -> bool:
    return code in builtin_templates() or (
        session.scalar(select(ReportTemplate.id).where(ReportTemplate.code == code)) is not None
    )


def pick_language(explicit: str | None, accept_language: str | None) -> str:
    """``?lang=`` if given, else the first supported language of Accept-Language, else zh-CN."""
    for candidate in [explicit or ""] + [
        part.split(";")[0].strip() for part in (accept_language or "").split(",")
    ]:
        tag = candidate.strip().lower()
        if not tag:
            continue
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


def fits(t: TemplateIn, modality: str | None, body_part: str | None) -> bool:
    """Whether *t* fits an exam: one of its modalities (a study's ``CR\\DX`` list counts
    if any matches) and, when both name body parts, one of its body parts."""
    if modality:
        wanted = {m.strip().upper() for m in modality.replace("\\", ",").split(",") if m.strip()}
        if wanted and not wanted & set(t.modalities):
            return False
    if body_part and t.body_parts:
        parts = {p.strip().upper() for p in body_part.replace("\\", ",").split(",") if p.strip()}
        if parts and not parts & set(t.body_parts):
            return False
    return bool(modality or body_part)


def list_templates(
    session: Session,
    caller: Caller,
    *,
    language: str,
    modality: str | None = None,
    body_part: str | None = None,
) -> list[TemplateView]:
    """Templates in *language*, those fitting the exam first (then by code)."""
    caller.require(Permission.report_read)
    views = [
        _view(t, language, matches=fits(t, modality, body_part), builtin=builtin)
        for t, builtin in all_templates(session).values()
    ]
    return sorted(views, key=lambda v: (not v.matches, v.code))


def suggested_template(session: Session, modality: str, body_part: str) -> str:
    """The code of the first template (by code) fitting the exam, or ``""``."""
    for code, (t, _) in sorted(all_templates(session).items()):
        if fits(t, modality, body_part):
            return code
    return ""


def import_template(session: Session, caller: Caller, data: TemplateIn) -> TemplateView:
    """An administrator adds (or replaces, with a higher version) an imported template.

    A built-in code cannot be replaced; re-importing an imported code needs a higher
    ``version``. Audited; commits.
    """
    caller.require(Permission.report_templates)
    if data.code in builtin_templates():
        raise Conflict(
            "A built-in template has this code; import it under another code.",
            code="report_template_exists",
        )
    row = session.scalar(select(ReportTemplate).where(ReportTemplate.code == data.code))
    payload = data.model_dump(mode="json", by_alias=True)
    if row is None:
        user = caller.actor
        session.add(
            ReportTemplate(
                code=data.code,
                data=payload,
                created_by_id=user.id if user is not None else None,
            )
        )
        op = "created"
    else:
        old = TemplateIn.model_validate(row.data)
        if data.version <= old.version:
            raise Conflict(
                "A template with this code exists; import a higher version to replace it.",
                code="report_template_exists",
            )
        row.data = payload
        op = "replaced"
    audit.record_for(
        session,
        caller,
        TEMPLATE_IMPORTED,
        object_type="report_template",
        object_id=data.code,
        detail={"op": op, "version": data.version},
    )
    session.commit()
    return _view(data, DEFAULT_LANGUAGE, matches=False, builtin=False)
