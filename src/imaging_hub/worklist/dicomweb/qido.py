"""QIDO-RS routes (PS3.18 10.6): search studies, series and instances as DICOM JSON."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from imaging_hub.dicom.dicomjson import dataset_to_json
from imaging_hub.dicom.frames import read_header
from imaging_hub.dicom.qido import Level, QidoQuery, parse_query
from imaging_hub.dicom.vocabulary import RETRIEVE_URL, qido_result, tags_of
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.dicomweb.common import (
    DICOM_JSON,
    PREFIX,
    Reader,
    Uid,
    base_url,
    dicom_json,
)
from imaging_hub.worklist.dicomweb.reader import DicomwebReader
from imaging_hub.worklist.dicomweb.retrieve import instance_url
from imaging_hub.worklist.dicomweb.search import InstanceRef
from imaging_hub.worklist.http.deps import StateDep

router = APIRouter(prefix=PREFIX, tags=["dicomweb"], default_response_class=Response)


def _query(request: Request, level: Level) -> QidoQuery:
    return parse_query(request.query_params.multi_items(), level=level)


def _answer(rows: list[dict[str, Any]], retrieve_urls: list[str]) -> Response:
    return dicom_json(
        [
            qido_result(values, retrieve_url=url)
            for values, url in zip(rows, retrieve_urls, strict=True)
        ]
    )


# Documents the real media type (PS3.18 10.6) so clients and schemathesis know what comes back.
QIDO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The matching attributes as DICOM JSON (PS3.18 F.2).",
        "content": {DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
}


@router.get("/studies", summary="QIDO-RS: search for studies", responses=QIDO_RESPONSES)
def studies(request: Request, caller: Reader) -> Response:
    rows = caller.search_studies(_query(request, "study"))
    base = base_url(request)
    return _answer(rows, [f"{base}/studies/{r['StudyInstanceUID']}" for r in rows])


def _series(request: Request, caller: DicomwebReader, study: str | None) -> Response:
    rows = caller.search_series(_query(request, "series"), study)
    base = base_url(request)
    urls = [f"{base}/studies/{r['StudyInstanceUID']}/series/{r['SeriesInstanceUID']}" for r in rows]
    return _answer(rows, urls)


@router.get("/series", summary="QIDO-RS: search for series", responses=QIDO_RESPONSES)
def all_series(request: Request, caller: Reader) -> Response:
    return _series(request, caller, None)


@router.get(
    "/studies/{study}/series",
    summary="QIDO-RS: search for series of a study",
    responses=QIDO_RESPONSES,
)
def study_series(study: Uid, request: Request, caller: Reader) -> Response:
    return _series(request, caller, study)


def _with_header(
    store: ObjectStore, values: dict[str, Any], ref: InstanceRef, base: str, query: QidoQuery
) -> dict[str, Any]:
    """DB values plus attributes read from the stored header (includefield=all or others)."""
    url = instance_url(base, ref)
    include = None if query.include_all else tags_of(query.includefields)
    with store.open(ref.object_key) as stream:
        header = dataset_to_json(
            read_header(stream), bulk_data_uri=lambda tag: f"{url}/bulkdata/{tag}", include=include
        )
    return qido_result(values, retrieve_url=url, header=header)


async def _instances(
    request: Request, caller: DicomwebReader, state: Any, study: str | None, series: str | None
) -> Response:
    query = _query(request, "instance")
    rows = await run_in_threadpool(caller.search_instances, query, study, series)
    base = base_url(request)
    known = {k for values, _ in rows for k in values}
    from_header = query.include_all or bool(query.includefields - known - {RETRIEVE_URL})
    out = []
    for values, ref in rows:
        if from_header:
            item = await run_in_threadpool(_with_header, state.store, values, ref, base, query)
        else:
            item = qido_result(values, retrieve_url=instance_url(base, ref))
        out.append(item)
    return dicom_json(out)


@router.get("/instances", summary="QIDO-RS: search for instances", responses=QIDO_RESPONSES)
async def all_instances(request: Request, caller: Reader, state: StateDep) -> Response:
    return await _instances(request, caller, state, None, None)


@router.get(
    "/studies/{study}/instances",
    summary="QIDO-RS: search for instances of a study",
    responses=QIDO_RESPONSES,
)
async def study_instances(
    study: Uid, request: Request, caller: Reader, state: StateDep
) -> Response:
    return await _instances(request, caller, state, study, None)


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for instances of a series",
    responses=QIDO_RESPONSES,
)
async def series_instances(
    study: Uid,
    series: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
) -> Response:
    return await _instances(request, caller, state, study, series)
