"""Gateway ingest: ``PUT /api/v1/ingest/instances/{SOPInstanceUID}`` and study completion.

Gateways authenticate with their clinic token; everything they send is stored under their own
clinic's prefix, whatever the data claims. Bodies are streamed to a temp file with their SHA-256
computed on the way and checked against ``X-Content-SHA256``: 64 hex digits, or ``trailer`` when
the digest is the body's last 64 bytes (a gateway streaming a file it is still encoding; see
docs/gateway.md). A body cut short, or whose digest differs, stores nothing.
"""

import hashlib
import re
import tempfile
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from imaging_hub.dicom.transcode import SHA256_HEX_DIGITS, SHA256_TRAILER
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
_HEX_DIGEST = re.compile(rf"[0-9a-fA-F]{{{SHA256_HEX_DIGITS}}}")


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
    x_content_sha256: Annotated[
        str, Header(pattern=rf"^([0-9a-fA-F]{{{SHA256_HEX_DIGITS}}}|{SHA256_TRAILER})$")
    ],
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
    trailing = x_content_sha256 == SHA256_TRAILER
    held = b""  # with a trailing digest: the last bytes seen, which may be (part of) it
    try:
        async for received in request.stream():
            chunk = received
            if trailing:
                chunk = held + received
                held = chunk[-SHA256_HEX_DIGITS:]
                chunk = chunk[:-SHA256_HEX_DIGITS] if len(chunk) > SHA256_HEX_DIGITS else b""
            size += len(chunk)
            if size > limit:
                raise InvalidDicomError("The instance is larger than the configured limit.")
            digest.update(chunk)
            body.write(chunk)
        expected = x_content_sha256
        if trailing:
            expected = held.decode("ascii", "replace")
            if not _HEX_DIGEST.fullmatch(expected):
                raise InvalidDicomError(
                    "The body does not end with its SHA-256 (64 hex digits), as "
                    f"X-Content-SHA256: {SHA256_TRAILER} says it does."
                )
        stored = await run_in_threadpool(
            ingest_instance,
            session,
            caller,
            store=state.store,
            body=body,  # type: ignore[arg-type]
            size=size,
            sha256=digest.hexdigest(),
            expected_sha256=expected,
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
