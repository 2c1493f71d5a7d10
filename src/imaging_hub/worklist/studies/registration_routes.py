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
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require
from imaging_hub.worklist.studies.registration import (
    Completion,
    StoredInstance,
    complete_from_gateway,
    ingest_instance,
)

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

UidPath = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]
IngestingGateway = Annotated[Gateway, require("gateway.ingest")]


class CompleteIn(BaseModel):
    sop_instance_uids: list[Annotated[str, Field(max_length=64, pattern=UID_PATTERN.pattern)]] = (
        Field(max_length=100_000)
    )


@router.put(
    "/instances/{sop_instance_uid}",
    response_model=StoredInstance,
    response_model_exclude={"object_key"},  # where the hub keeps it is the hub's business
)
async def put_instance(
    sop_instance_uid: UidPath,
    request: Request,
    response: Response,
    _: IngestingGateway,
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
    x_content_sha256: Annotated[str, Header(pattern=r"^[0-9a-fA-F]{64}$")],
) -> StoredInstance:
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
        stored = await run_in_threadpool(
            ingest_instance,
            session,
            caller,
            store=state.store,
            body=body,  # type: ignore[arg-type]
            size=size,
            sha256=digest.hexdigest(),
            expected_sha256=x_content_sha256,
            expected_sop_instance_uid=sop_instance_uid,
        )
    finally:
        body.close()
    response.status_code = 201 if stored.created else 200
    return stored


@router.post("/studies/{study_instance_uid}/complete", response_model=Completion)
def post_complete(
    study_instance_uid: UidPath,
    payload: CompleteIn,
    _: IngestingGateway,
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
) -> Completion:
    return complete_from_gateway(
        session,
        caller,
        study_instance_uid,
        sop_instance_uids=payload.sop_instance_uids,
        sla=state.sla,
    )
