"""STOW-RS routes (PS3.18 10.5): store instances sent as multipart/related application/dicom,
or as application/dicom+json metadata with bulk data parts (PS3.18 10.5.1.2).

Only clinic staff store, always under their own clinic (like a clinic's gateway); the body is
parsed as it arrives and each part spooled to a temporary file with its size capped.
"""

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from imaging_hub.dicom.dicomjson import store_response
from imaging_hub.errors import InvalidRequest, PayloadTooLarge
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.dicomweb.common import PREFIX, STOW_RESPONSES, Uid, base_url, dicom_json
from imaging_hub.worklist.dicomweb.multipart import MultipartReader, stow_boundary
from imaging_hub.worklist.dicomweb.storing import DICOM_JSON, stow
from imaging_hub.worklist.http.deps import CallerDep, SessionDep, StateDep
from imaging_hub.worklist.http.permissions import require

router = APIRouter(prefix=PREFIX, tags=["dicomweb"], default_response_class=Response)


Storer = Annotated[User, require(Permission.dicomweb_store)]


async def _store(
    request: Request,
    caller: Caller,
    session: Session,
    state: StateDep,
    study: str | None,
) -> Response:
    """Parse the body as it arrives, then store it for the caller (:func:`stow`)."""
    boundary, part_type = stow_boundary(request.headers.get("content-type"))
    limit = state.settings.dicomweb_max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request is larger than the limit of {limit} bytes.")
    reader = MultipartReader(boundary=boundary, max_part=state.settings.max_instance_bytes)
    try:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"The request is larger than the limit of {limit} bytes.")
            await run_in_threadpool(reader.feed, chunk)
        parts = reader.finish()
        if not parts:
            raise InvalidRequest("The multipart body has no parts.")
        result = await run_in_threadpool(
            stow,
            session,
            caller,
            store=state.store,
            parts=parts,
            metadata_and_bulk_data=part_type == DICOM_JSON,
            study_instance_uid=study,
        )
    finally:
        reader.close()
    base = base_url(request)
    body = store_response(
        retrieve_url=f"{base}/studies/{study}" if study else None,
        referenced=[
            (cls, sop, f"{base}/studies/{st}/series/{se}/instances/{sop}")
            for cls, sop, st, se in result.stored
        ],
        failed=result.failed,
    )
    return dicom_json(body, status_code=result.status_code)


@router.post("/studies", summary="STOW-RS: store instances", responses=STOW_RESPONSES)
async def store_instances(
    request: Request, _: Storer, caller: CallerDep, session: SessionDep, state: StateDep
) -> Response:
    return await _store(request, caller, session, state, None)


@router.post(
    "/studies/{study}",
    summary="STOW-RS: store instances of one study",
    responses=STOW_RESPONSES,
)
async def store_study_instances(
    study: Uid, request: Request, _: Storer, caller: CallerDep, session: SessionDep, state: StateDep
) -> Response:
    return await _store(request, caller, session, state, study)
