"""Gateway ingest: ``PUT /api/v1/ingest/instances/{SOPInstanceUID}`` and study completion.

Gateways authenticate with their clinic token; everything they send is stored under their own
clinic's prefix, whatever the data claims. Bodies are streamed to a temp file with their SHA-256
computed on the way and checked against ``X-Content-SHA256``.
"""

import hashlib
import tempfile
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.errors import InvalidDicomError
from imaging_hub.worklist.db.models import Gateway
from imaging_hub.worklist.http.deps import SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.studies.registration import complete_study, register_instance

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

UidPath = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]
IngestingGateway = Annotated[Gateway, require("gateway.ingest")]


class StoredOut(BaseModel):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    size: int
    sha256: str
    created: bool


class CompleteIn(BaseModel):
    sop_instance_uids: list[Annotated[str, Field(max_length=64, pattern=UID_PATTERN.pattern)]] = (
        Field(max_length=100_000)
    )


class CompleteOut(BaseModel):
    complete: bool
    missing: list[str]


@router.put("/instances/{sop_instance_uid}", response_model=StoredOut)
async def put_instance(
    sop_instance_uid: UidPath,
    request: Request,
    response: Response,
    gateway: IngestingGateway,
    session: SessionDep,
    state: StateDep,
    x_content_sha256: Annotated[str, Header(pattern=r"^[0-9a-fA-F]{64}$")],
) -> StoredOut:
    limit = state.settings.max_instance_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidDicomError("The instance is larger than the configured limit.")
    body: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=8 << 20
    )
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidDicomError("The instance is larger than the configured limit.")
            digest.update(chunk)
            body.write(chunk)
        clinic = gateway.institution
        stored = await run_in_threadpool(
            register_instance,
            session,
            store=state.store,
            clinic=clinic,
            body=body,  # type: ignore[arg-type]
            size=size,
            sha256=digest.hexdigest(),
            expected_sha256=x_content_sha256,
            expected_sop_instance_uid=sop_instance_uid,
            gateway_id=gateway.id,
        )
    finally:
        body.close()
    response.status_code = 201 if stored.created else 200
    return StoredOut(
        study_instance_uid=stored.study_instance_uid,
        series_instance_uid=stored.series_instance_uid,
        sop_instance_uid=stored.sop_instance_uid,
        size=stored.size,
        sha256=stored.sha256,
        created=stored.created,
    )


@router.post("/studies/{study_instance_uid}/complete", response_model=CompleteOut)
def post_complete(
    study_instance_uid: UidPath,
    payload: CompleteIn,
    gateway: IngestingGateway,
    session: SessionDep,
    state: StateDep,
) -> CompleteOut:
    missing = complete_study(
        session,
        clinic=gateway.institution,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=payload.sop_instance_uids,
        sla=state.sla,
        gateway_id=gateway.id,
    )
    return CompleteOut(complete=not missing, missing=missing)
