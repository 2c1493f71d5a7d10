"""STOW-RS routes (PS3.18 10.5): store instances sent as multipart/related application/dicom,
or as application/dicom+json metadata with bulk data parts (PS3.18 10.5.1.2).

Only clinic staff store, always under their own clinic (like a clinic's gateway); the body is
parsed as it arrives and each part spooled to a temporary file with its size capped.
"""

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from imaging_hub.dicom.dicomjson import store_response
from imaging_hub.errors import InvalidRequest, PayloadTooLarge
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.dicomweb.common import PREFIX, Caller, Storer, Uid, base_url, dicom_json
from imaging_hub.worklist.dicomweb.multipart import MultipartReader, stow_boundary
from imaging_hub.worklist.dicomweb.storing import DICOM_JSON, store_json_parts, store_parts
from imaging_hub.worklist.http.deps import StateDep

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])


async def _store(request: Request, caller: Caller, state: StateDep, study: str | None) -> Response:
    """Store for the caller's own clinic (the policy grants dicomweb.store to clinic staff)."""
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
            store_json_parts if part_type == DICOM_JSON else store_parts,
            caller.session,
            store=state.store,
            clinic=caller.user.institution,
            parts=parts,
            study_instance_uid=study,
        )
    finally:
        reader.close()
    await run_in_threadpool(_audit_stored, caller, result.stored, len(result.failed))
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


def _audit_stored(caller: Caller, stored: list[tuple[str, str, str, str]], failed: int) -> None:
    studies = sorted({study for _, _, study, _ in stored})
    for study in studies:
        count = sum(1 for s in stored if s[2] == study)
        caller.auditor.record(
            audit.STUDY_STORED,
            object_type="study",
            object_id=study,
            study_uid=study,
            detail={"via": "stow-rs", "instances": count, "failed_parts": failed},
        )
    if failed and not studies:
        caller.auditor.record(
            audit.STUDY_STORED,
            object_type="stow",
            detail={"via": "stow-rs", "failed_parts": failed},
        )
    caller.session.commit()


@router.post("/studies", summary="STOW-RS: store instances")
async def store_instances(request: Request, caller: Storer, state: StateDep) -> Response:
    return await _store(request, caller, state, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def store_study_instances(
    study: Uid, request: Request, caller: Storer, state: StateDep
) -> Response:
    return await _store(request, caller, state, study)
