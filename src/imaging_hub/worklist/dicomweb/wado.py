"""WADO-RS routes (PS3.18 10.4): instances, metadata, frames, bulk data, rendered, thumbnail.

Instances and frames go out as multipart/related, streamed from the object store; metadata as
a DICOM JSON array produced instance by instance.
"""

import re
from collections.abc import Iterator

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from imaging_hub.errors import InvalidRequest
from imaging_hub.worklist import audit
from imaging_hub.worklist.api.deps import StateDep
from imaging_hub.worklist.dicomweb.common import DICOM_JSON, PREFIX, Reader, Uid, base_url
from imaging_hub.worklist.dicomweb.multipart import multipart_stream, new_boundary, parse_accept
from imaging_hub.worklist.dicomweb.retrieve import (
    RenderOptions,
    choose_frame_encoding,
    choose_syntaxes,
    frame_content_type,
    instance_parts,
    metadata_stream,
    parse_frame_list,
    parse_render_options,
    read_bulkdata,
    read_frames,
    render,
)
from imaging_hub.worklist.dicomweb.search import InstanceRef

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def _multipart(parts: Iterator[tuple[str, Iterator[bytes]]], part_type: str) -> Response:
    boundary = new_boundary()
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return StreamingResponse(multipart_stream(parts, boundary), media_type=media_type)


def _retrieve(request: Request, state: StateDep, refs: list[InstanceRef]) -> Response:
    syntaxes = choose_syntaxes(refs, parse_accept(request.headers.get("accept")))
    return _multipart(instance_parts(state.store, refs, syntaxes), "application/dicom")


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study")
def retrieve_study(study: Uid, request: Request, caller: Reader, state: StateDep) -> Response:
    return _retrieve(request, state, caller.instances(audit.STUDY_RETRIEVED, study_uid=study))


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    study: Uid,
    series: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
) -> Response:
    refs = caller.instances(audit.STUDY_RETRIEVED, study_uid=study, series_uid=series)
    return _retrieve(request, state, refs)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: retrieve an instance"
)
def retrieve_instance(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
) -> Response:
    refs = caller.instances(
        audit.STUDY_RETRIEVED, study_uid=study, series_uid=series, sop_uid=instance
    )
    return _retrieve(request, state, refs)


def _metadata(request: Request, state: StateDep, refs: list[InstanceRef]) -> Response:
    return StreamingResponse(
        metadata_stream(state.store, refs, base=base_url(request)), media_type=DICOM_JSON
    )


@router.get("/studies/{study}/metadata", summary="WADO-RS: study metadata")
def study_metadata(study: Uid, request: Request, caller: Reader, state: StateDep) -> Response:
    return _metadata(request, state, caller.instances(audit.STUDY_RETRIEVED, study_uid=study))


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
def series_metadata(
    study: Uid,
    series: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
) -> Response:
    refs = caller.instances(audit.STUDY_RETRIEVED, study_uid=study, series_uid=series)
    return _metadata(request, state, refs)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: instance metadata",
)
def instance_metadata(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
) -> Response:
    refs = caller.instances(
        audit.STUDY_RETRIEVED, study_uid=study, series_uid=series, sop_uid=instance
    )
    return _metadata(request, state, refs)


def _frames(request: Request, state: StateDep, ref: InstanceRef, numbers: list[int]) -> Response:
    choice = choose_frame_encoding(ref, parse_accept(request.headers.get("accept")))
    frames = read_frames(state.store, ref, numbers, decode=choice.decode)
    content_type = frame_content_type(frames)
    parts = ((content_type, iter([frame])) for frame in frames.frames)
    part_type = content_type.split(";")[0]
    return _multipart(parts, part_type)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="WADO-RS: frames of an instance",
)
def instance_frames(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    frames: str = Path(max_length=2000),
) -> Response:
    numbers = parse_frame_list(frames)
    (ref,) = caller.instances(
        audit.FRAMES_FETCHED, study_uid=study, series_uid=series, sop_uid=instance
    )
    return _frames(request, state, ref, numbers)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="WADO-RS: bulk data of an instance (Pixel Data: all frames)",
)
def instance_bulkdata(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    tag: str = Path(max_length=8),
) -> Response:
    if not _TAG.fullmatch(tag):
        raise InvalidRequest("A bulk data tag is eight hexadecimal digits.")
    (ref,) = caller.instances(
        audit.FRAMES_FETCHED, study_uid=study, series_uid=series, sop_uid=instance
    )
    if tag.upper() == "7FE00010":
        count = ref.number_of_frames or 1
        return _frames(request, state, ref, list(range(1, count + 1)))
    value = read_bulkdata(state.store, ref, int(tag, 16))
    return _multipart(
        iter([("application/octet-stream", iter([value]))]), "application/octet-stream"
    )


def _render_response(
    request: Request,
    state: StateDep,
    ref: InstanceRef,
    frame: int,
    *,
    window: str | None,
    viewport: str | None,
    quality: str | None,
    thumbnail: bool,
) -> Response:
    options: RenderOptions = parse_render_options(
        accept=parse_accept(request.headers.get("accept")),
        window=window,
        viewport=viewport,
        quality=quality,
        thumbnail=thumbnail,
    )
    try:
        image = render(state.store, ref, frame, options)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return Response(image, media_type=f"image/{options.fmt}")


_WINDOW = Query(default=None, max_length=100)
_VIEWPORT = Query(default=None, max_length=100)
_QUALITY = Query(default=None, max_length=3)


def _one(caller: Reader, study: str, series: str, instance: str) -> InstanceRef:
    (ref,) = caller.instances(
        audit.FRAMES_FETCHED, study_uid=study, series_uid=series, sop_uid=instance
    )
    return ref


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="WADO-RS: rendered instance (first frame), image/jpeg or image/png",
)
def instance_rendered(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    ref = _one(caller, study, series, instance)
    return _render_response(
        request, state, ref, 1, window=window, viewport=viewport, quality=quality, thumbnail=False
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
    summary="WADO-RS: rendered frame",
)
def frame_rendered(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    frame: int = Path(ge=1, le=10_000_000),
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    ref = _one(caller, study, series, instance)
    return _render_response(
        request,
        state,
        ref,
        frame,
        window=window,
        viewport=viewport,
        quality=quality,
        thumbnail=False,
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    summary="WADO-RS: thumbnail of an instance",
)
def instance_thumbnail(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    ref = _one(caller, study, series, instance)
    return _render_response(
        request, state, ref, 1, window=window, viewport=viewport, quality=quality, thumbnail=True
    )


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail",
    summary="WADO-RS: thumbnail of a frame",
)
def frame_thumbnail(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    frame: int = Path(ge=1, le=10_000_000),
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    ref = _one(caller, study, series, instance)
    return _render_response(
        request,
        state,
        ref,
        frame,
        window=window,
        viewport=viewport,
        quality=quality,
        thumbnail=True,
    )


def _representative(refs: list[InstanceRef]) -> InstanceRef:
    """The middle image of a series (or study): what a thumbnail should show."""
    images = [r for r in refs if r.rows] or refs
    return images[len(images) // 2]


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
def series_thumbnail(
    study: Uid,
    series: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    refs = caller.instances(audit.STUDY_RETRIEVED, study_uid=study, series_uid=series)
    return _render_response(
        request,
        state,
        _representative(refs),
        1,
        window=window,
        viewport=viewport,
        quality=quality,
        thumbnail=True,
    )


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail")
def study_thumbnail(
    study: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    window: str | None = _WINDOW,
    viewport: str | None = _VIEWPORT,
    quality: str | None = _QUALITY,
) -> Response:
    refs = caller.instances(audit.STUDY_RETRIEVED, study_uid=study)
    return _render_response(
        request,
        state,
        _representative(refs),
        1,
        window=window,
        viewport=viewport,
        quality=quality,
        thumbnail=True,
    )
