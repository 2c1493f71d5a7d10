"""Report routes: templates, the study's report chain, drafts, signing, addenda, the signed
PDF, critical-result receipt, and the hub CA for verifiers. Thin: parse, call one domain
function, answer its dataclass.

Signing runs pyHanko, which calls ``asyncio.run`` internally: the sign route is a plain ``def``
(FastAPI runs it in its thread pool), never a coroutine.
"""

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.http.problems import problem
from imaging_hub.worklist.reports import service, templates
from imaging_hub.worklist.reports.credentials import ReportsRuntime
from imaging_hub.worklist.reports.pdf import InvalidKeyImage, ReportFontMissing
from imaging_hub.worklist.reports.pki import CertificateRevoked, InvalidSigningPassword, PkiError
from imaging_hub.worklist.reports.service import (
    AckMethod,
    DraftInput,
    EmptyImpression,
    InvalidKeyImageReference,
    InvalidReport,
    KeyImageRef,
    ReportChain,
    ReportItem,
)
from imaging_hub.worklist.reports.signing import SigningFailed
from imaging_hub.worklist.reports.templates import TemplateIn, TemplateView

router = APIRouter(tags=["reports"])

UidPath = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]
ReportId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def runtime_of(request: Request) -> ReportsRuntime:
    runtime: ReportsRuntime = request.app.state.reports
    return runtime


UidField = Annotated[str, Field(max_length=64, pattern=UID_PATTERN.pattern)]
WindowValue = Annotated[
    float,
    Field(allow_inf_nan=False, ge=-service.KEY_IMAGE_MAX_WINDOW, le=service.KEY_IMAGE_MAX_WINDOW),
]


class KeyImageIn(BaseModel):
    series_instance_uid: UidField
    sop_instance_uid: UidField
    frame: int = Field(default=1, ge=1, le=service.KEY_IMAGE_MAX_FRAME)
    window_center: WindowValue | None = None
    window_width: WindowValue | None = None

    def domain(self) -> KeyImageRef:
        return KeyImageRef(**self.model_dump())


class DraftIn(BaseModel):
    template: str = Field(default="", max_length=64)
    findings: str = Field(default="", max_length=service.FINDINGS_MAX)
    impression: str = Field(default="", max_length=service.IMPRESSION_MAX)
    critical: bool = False
    critical_category: str = Field(default="", max_length=64)
    key_image: KeyImageIn | None = None

    def domain(self) -> DraftInput:
        return DraftInput(
            template=self.template,
            findings=self.findings,
            impression=self.impression,
            critical=self.critical,
            critical_category=self.critical_category,
            key_image=self.key_image.domain() if self.key_image is not None else None,
        )


class SignIn(BaseModel):
    password: str = Field(min_length=1, max_length=1024)


class AcknowledgeIn(BaseModel):
    method: AckMethod
    read_back: str = Field(min_length=1, max_length=4000)


@router.get("/api/v1/report-templates", response_model=list[TemplateView])
def get_templates(
    session: SessionDep,
    _: Annotated[User, require("report.read")],
    caller: CallerDep,
    lang: Annotated[str | None, Query(max_length=16)] = None,
    modality: Annotated[str | None, Query(max_length=64)] = None,
    body_part: Annotated[str | None, Query(max_length=64)] = None,
    accept_language: Annotated[str | None, Header(max_length=256)] = None,
) -> list[TemplateView]:
    """Templates in the caller's language (``?lang=`` or Accept-Language; zh-CN by default),
    those fitting ``modality``/``body_part`` first (``matches``)."""
    return templates.list_templates(
        session,
        caller,
        language=templates.pick_language(lang, accept_language),
        modality=modality,
        body_part=body_part,
    )


@router.post("/api/v1/report-templates", response_model=TemplateView, status_code=201)
def post_template(
    payload: TemplateIn,
    session: SessionDep,
    _: Annotated[User, require("report.templates")],
    caller: CallerDep,
) -> TemplateView:
    """Import a template (administrators): validated; a higher version replaces an import."""
    return templates.import_template(session, caller, payload)


@router.get("/api/v1/studies/{study_instance_uid}/report", response_model=ReportChain)
def get_report_chain(
    study_instance_uid: UidPath,
    request: Request,
    session: SessionDep,
    _: Annotated[User, require("report.read")],
    caller: CallerDep,
    state: StateDep,
) -> ReportChain:
    """The study's report chain: the signed report, its addenda, the caller's draft."""
    return service.get_chain(
        session,
        caller,
        study_instance_uid,
        runtime=runtime_of(request),
        batcher=state.access_batcher,
    )


@router.put("/api/v1/studies/{study_instance_uid}/report", response_model=ReportItem)
def put_report_draft(
    study_instance_uid: UidPath,
    payload: DraftIn,
    request: Request,
    session: SessionDep,
    _: Annotated[User, require("report.write")],
    caller: CallerDep,
) -> ReportItem:
    """Create or update the caller's draft (only the radiologist holding the claim)."""
    return service.save_draft(
        session, caller, study_instance_uid, payload.domain(), runtime=runtime_of(request)
    )


@router.post(
    "/api/v1/studies/{study_instance_uid}/report/addenda",
    response_model=ReportItem,
    status_code=201,
)
def post_addendum(
    study_instance_uid: UidPath,
    payload: DraftIn,
    request: Request,
    session: SessionDep,
    _: Annotated[User, require("report.write")],
    caller: CallerDep,
) -> ReportItem:
    """Create (or update) the caller's draft addendum to the latest signed document."""
    return service.save_addendum(
        session, caller, study_instance_uid, payload.domain(), runtime=runtime_of(request)
    )


@router.put("/api/v1/reports/{report_id}", response_model=ReportItem)
def put_report(
    report_id: ReportId,
    payload: DraftIn,
    request: Request,
    session: SessionDep,
    _: Annotated[User, require("report.write")],
    caller: CallerDep,
) -> ReportItem:
    """Update one of the caller's drafts by id (a report or an addendum)."""
    return service.update_draft(
        session, caller, report_id, payload.domain(), runtime=runtime_of(request)
    )


@router.post("/api/v1/reports/{report_id}/sign", response_model=ReportItem)
def post_sign(
    report_id: ReportId,
    payload: SignIn,
    request: Request,
    session: SessionDep,
    _: Annotated[User, require("report.sign")],
    caller: CallerDep,
    state: StateDep,
) -> ReportItem:
    """Sign the caller's draft with the re-entered password (a plain ``def``: pyHanko)."""
    return service.sign(
        session,
        caller,
        report_id,
        password=payload.password,
        runtime=runtime_of(request),
        store=state.store,
    )


@router.get(
    "/api/v1/reports/{report_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The signed PDF."}},
)
def get_report_pdf(
    report_id: ReportId,
    session: SessionDep,
    _: Annotated[User, require("report.read")],
    caller: CallerDep,
    state: StateDep,
) -> Response:
    """The signed PDF, byte for byte what was signed."""
    pdf = service.get_pdf(session, caller, report_id, store=state.store)
    return Response(
        pdf.data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{pdf.filename}"',
            "ETag": f'"{pdf.sha256}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/api/v1/reports/{report_id}/acknowledge", response_model=ReportItem)
def post_acknowledge(
    report_id: ReportId,
    payload: AcknowledgeIn,
    session: SessionDep,
    _: Annotated[User, require("report.acknowledge")],
    caller: CallerDep,
) -> ReportItem:
    """A clinic user records receipt of a critical result (method, read-back)."""
    return service.acknowledge(
        session, caller, report_id, method=payload.method, read_back=payload.read_back
    )


@router.get(
    "/api/v1/pki/ca.pem",
    response_class=Response,
    responses={200: {"content": {"application/x-pem-file": {}}, "description": "The hub CA."}},
)
def get_ca_pem(request: Request, session: SessionDep) -> Response:
    """The hub CA certificate: all a verifier needs (public, no patient data)."""
    ca = runtime_of(request).ca(session)
    return Response(
        ca.certificate_pem,
        media_type="application/x-pem-file",
        headers={"Content-Disposition": 'attachment; filename="ca.pem"'},
    )


@router.get(
    "/api/v1/pki/crl.der",
    response_class=Response,
    responses={200: {"content": {"application/pkix-crl": {}}, "description": "The CRL."}},
)
def get_crl(request: Request, session: SessionDep) -> Response:
    """The hub CA's current certificate revocation list (public, DER)."""
    from cryptography.hazmat.primitives import serialization

    crl = runtime_of(request).ca(session).current_crl()
    return Response(crl.public_bytes(serialization.Encoding.DER), media_type="application/pkix-crl")


#: The library core's errors and the reports' own 422s, with their HTTP status.
REPORT_STATUS: list[tuple[type[Exception], int, str]] = [
    (InvalidSigningPassword, 401, "Unauthorized"),
    (CertificateRevoked, 409, "Conflict"),
    (PkiError, 503, "Service Unavailable"),
    (SigningFailed, 503, "Service Unavailable"),
    (ReportFontMissing, 503, "Service Unavailable"),
    (InvalidKeyImage, 422, "Unprocessable Content"),
    (EmptyImpression, 422, "Unprocessable Content"),
    (InvalidReport, 422, "Unprocessable Content"),
    (InvalidKeyImageReference, 422, "Unprocessable Content"),
]


def install_report_error_handlers(app: FastAPI) -> None:
    for exc_type, status, title in REPORT_STATUS:

        def handler(
            request: Request, exc: Exception, status: int = status, title: str = title
        ) -> Response:
            # 401 here is a wrong signing password, not missing credentials: no challenge.
            return problem(status, title, str(exc), code=str(getattr(exc, "code", "error")))

        app.add_exception_handler(exc_type, handler)
