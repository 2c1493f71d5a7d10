"""WADO-RS routes (PS3.18 10.4): instances, metadata, frames, bulk data, rendered, thumbnail.

Instances and frames go out as multipart/related, streamed from the object store; metadata as
a DICOM JSON array produced instance by instance.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.errors import InvalidRequest, NotAcceptable
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.dicomweb.common import (
    DICOM_JSON,
    FRAMES_RESPONSES,
    INSTANCES_RESPONSES,
    METADATA_RESPONSES,
    PREFIX,
    RENDERED_RESPONSES,
    NeedsWorker,
    Reader,
    Uid,
    base_url,
)
from imaging_hub.worklist.dicomweb.fast import INLINE_READ_BYTES, FastGet
from imaging_hub.worklist.dicomweb.multipart import (
    multipart_pieces,
    multipart_stream,
    new_boundary,
    parse_accept,
)
from imaging_hub.worklist.dicomweb.reader import DicomwebReader
from imaging_hub.worklist.dicomweb.retrieve import (
    RenderOptions,
    cheap_read_bytes,
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
    rendered_parts,
    wants_multipart,
)
from imaging_hub.worklist.dicomweb.search import InstanceRef
from imaging_hub.worklist.http.deps import HubState, StateDep

router = APIRouter(prefix=PREFIX, tags=["dicomweb"], default_response_class=Response)

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")


def _multipart(parts: Iterator[tuple[str, Iterator[bytes]]], part_type: str) -> Response:
    boundary = new_boundary()
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return StreamingResponse(multipart_stream(parts, boundary), media_type=media_type)


#: Frames and bulk data up to this size go out as one plain response, larger ones stream.
IN_MEMORY_BYTES = 4 << 20


def _multipart_in_memory(parts: list[tuple[str, bytes]], part_type: str) -> Response:
    """Frames and bulk data already read: one body with Content-Length when small.

    A small body is joined and sent as a plain Response (no thread hops per chunk); a large
    one (a 15 MB radiograph frame) streams as it is, never copied.
    """
    if sum(len(data) for _, data in parts) > IN_MEMORY_BYTES:
        return _multipart(((ct, iter([data])) for ct, data in parts), part_type)
    boundary = new_boundary()
    body = b"".join(multipart_pieces(((ct, (data,)) for ct, data in parts), boundary))
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return Response(body, media_type=media_type)


def _instances_or_metadata(request: Request, state: StateDep, refs: list[InstanceRef]) -> Response:
    """The instances as multipart/related, or their metadata when the path ends /metadata."""
    if request.url.path.endswith("/metadata"):
        stream = metadata_stream(state.store, refs, base=base_url(request))
        return StreamingResponse(stream, media_type=DICOM_JSON)
    syntaxes = choose_syntaxes(refs, parse_accept(request.headers.get("accept")))
    return _multipart(instance_parts(state.store, refs, syntaxes), "application/dicom")


def study_resource(study: Uid, request: Request, caller: Reader, state: StateDep) -> Response:
    refs = caller.retrieve(study)
    return _instances_or_metadata(request, state, refs)


def series_resource(
    study: Uid, series: Uid, request: Request, caller: Reader, state: StateDep
) -> Response:
    refs = caller.retrieve(study, series)
    return _instances_or_metadata(request, state, refs)


def instance_resource(
    study: Uid, series: Uid, instance: Uid, request: Request, caller: Reader, state: StateDep
) -> Response:
    refs = caller.retrieve(study, series, instance)
    return _instances_or_metadata(request, state, refs)


STUDY = "/studies/{study}"
SERIES = "/studies/{study}/series/{series}"
INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"
for _level, _path, _endpoint in (
    ("study", STUDY, study_resource),
    ("series", SERIES, series_resource),
    ("instance", INSTANCE, instance_resource),
):
    router.add_api_route(
        _path,
        _endpoint,
        methods=["GET"],
        summary=f"WADO-RS: retrieve a {_level}",
        operation_id=f"retrieve_{_level}",
        responses=INSTANCES_RESPONSES,
    )
    router.add_api_route(
        f"{_path}/metadata",
        _endpoint,
        methods=["GET"],
        summary=f"WADO-RS: {_level} metadata",
        operation_id=f"{_level}_metadata",
        responses=METADATA_RESPONSES,
    )


def _frames(
    request: Request, state: HubState, ref: InstanceRef, numbers: list[int], *, inline: bool = False
) -> Response:
    choice = choose_frame_encoding(ref, parse_accept(request.headers.get("accept")))
    if inline:  # on the event loop: only ranged reads by a cached layout, and not too many bytes
        size = cheap_read_bytes(ref, numbers, decode=choice.decode, layouts=state.frame_layouts)
        if size is None or size > INLINE_READ_BYTES:
            raise NeedsWorker("These frames need the header read, decoding or a large read.")
    frames = read_frames(
        state.store, ref, numbers, decode=choice.decode, layouts=state.frame_layouts
    )
    content_type = frame_content_type(frames)
    parts = [(content_type, frame) for frame in frames.frames]
    return _multipart_in_memory(parts, content_type.split(";")[0])


FRAMES = f"{INSTANCE}/frames/{{frames}}"
MAX_FRAME_LIST = 2000


def frames_answer(
    caller: DicomwebReader,
    state: HubState,
    request: Request,
    *,
    study: str,
    series: str,
    instance: str,
    frames: str,
) -> Response:
    """Frames of an instance (PS3.18 10.4.1.1.4), for both routes of this path."""
    numbers = parse_frame_list(frames)
    (ref,) = caller.pixels(study, series, instance)
    return _frames(request, state, ref, numbers, inline=caller.inline)


@router.get(FRAMES, summary="WADO-RS: frames of an instance", responses=FRAMES_RESPONSES)
def instance_frames(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    frames: str = Path(max_length=MAX_FRAME_LIST),
) -> Response:
    return frames_answer(
        caller, state, request, study=study, series=series, instance=instance, frames=frames
    )


#: The same path answered in front of FastAPI's routing (see
#: :mod:`imaging_hub.worklist.dicomweb.fast`): frames are what viewers fetch most.
fast_routes = [
    FastGet(
        PREFIX + FRAMES,
        lambda caller, state, request: frames_answer(caller, state, request, **request.path_params),
        permission=Permission.dicomweb_read,
        checks={
            "study": is_valid_uid,
            "series": is_valid_uid,
            "instance": is_valid_uid,
            "frames": lambda value: len(value) <= MAX_FRAME_LIST,
        },
    )
]


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
    summary="WADO-RS: bulk data of an instance (Pixel Data: all frames)",
    responses=FRAMES_RESPONSES,
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
    (ref,) = caller.pixels(study, series, instance)
    if tag.upper() == "7FE00010":
        count = ref.number_of_frames or 1
        return _frames(request, state, ref, list(range(1, count + 1)))
    value = read_bulkdata(state.store, ref, int(tag, 16))
    return _multipart_in_memory([("application/octet-stream", value)], "application/octet-stream")


@dataclass(frozen=True)
class RenderQuery:
    """The rendering query parameters of PS3.18 8.3.5.1, as sent."""

    window: str | None
    viewport: str | None
    quality: str | None


async def _render_query(
    window: Annotated[str | None, Query(max_length=100)] = None,
    viewport: Annotated[str | None, Query(max_length=100)] = None,
    quality: Annotated[str | None, Query(max_length=3)] = None,
) -> RenderQuery:
    return RenderQuery(window, viewport, quality)


RenderDep = Annotated[RenderQuery, Depends(_render_query)]
FrameNumber = Annotated[int, Path(ge=1, le=10_000_000)]


def _rendered(
    request: Request,
    state: StateDep,
    ref: InstanceRef,
    frame: int,
    query: RenderQuery,
    *,
    thumbnail: bool,
) -> Response:
    options: RenderOptions = parse_render_options(
        accept=parse_accept(request.headers.get("accept")),
        window=query.window,
        viewport=query.viewport,
        quality=query.quality,
        thumbnail=thumbnail,
    )
    try:
        image = render(state.store, ref, frame, options)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return Response(image, media_type=f"image/{options.fmt}")


def _one(caller: Reader, study: str, series: str, instance: str) -> InstanceRef:
    (ref,) = caller.pixels(study, series, instance)
    return ref


def instance_image(
    study: Uid,
    series: Uid,
    instance: Uid,
    request: Request,
    caller: Reader,
    state: StateDep,
    query: RenderDep,
) -> Response:
    """Rendered first frame, or its thumbnail (the path says which)."""
    ref = _one(caller, study, series, instance)
    thumbnail = request.url.path.endswith("/thumbnail")
    return _rendered(request, state, ref, 1, query, thumbnail=thumbnail)


def frame_image(
    study: Uid,
    series: Uid,
    instance: Uid,
    frame: FrameNumber,
    request: Request,
    caller: Reader,
    state: StateDep,
    query: RenderDep,
) -> Response:
    """Rendered frame, or its thumbnail (the path says which)."""
    ref = _one(caller, study, series, instance)
    thumbnail = request.url.path.endswith("/thumbnail")
    return _rendered(request, state, ref, frame, query, thumbnail=thumbnail)


for _kind in ("rendered", "thumbnail"):
    router.add_api_route(
        f"{INSTANCE}/{_kind}",
        instance_image,
        methods=["GET"],
        summary=f"WADO-RS: {_kind} instance (first frame), image/jpeg or image/png",
        operation_id=f"instance_{_kind}",
        responses=RENDERED_RESPONSES,
    )
    router.add_api_route(
        f"{INSTANCE}/frames/{{frame}}/{_kind}",
        frame_image,
        methods=["GET"],
        summary=f"WADO-RS: {_kind} frame, image/jpeg or image/png",
        operation_id=f"frame_{_kind}",
        responses=RENDERED_RESPONSES,
    )


def _rendered_many(
    request: Request, state: StateDep, refs: list[InstanceRef], query: RenderQuery, what: str
) -> Response:
    """Rendered study or series (PS3.18 10.4.1.1.3): with ``Accept: multipart/related;
    type="image/jpeg"`` (or png) every image's first frame, one part each, in series and
    instance order; with a single-part Accept (``image/jpeg``, what dicomweb-client's
    ``retrieve_series_rendered`` sends) the first image. The first image is rendered before
    the answer starts, so bad parameters are still a 4xx.
    """
    ranges = parse_accept(request.headers.get("accept"))
    options = parse_render_options(
        accept=ranges, window=query.window, viewport=query.viewport, quality=query.quality
    )
    images = [ref for ref in refs if ref.rows]
    if not images:
        raise NotAcceptable(f"This {what} has no images to render.")
    try:
        first = render(state.store, images[0], 1, options)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    media_type = f"image/{options.fmt}"
    if not wants_multipart(ranges):
        return Response(first, media_type=media_type)
    parts = chain([(media_type, iter([first]))], rendered_parts(state.store, images[1:], options))
    return _multipart(parts, media_type)


@router.get(
    "/studies/{study}/series/{series}/rendered",
    summary="WADO-RS: rendered series",
    responses=RENDERED_RESPONSES,
)
def series_rendered(
    study: Uid, series: Uid, request: Request, caller: Reader, state: StateDep, query: RenderDep
) -> Response:
    refs = caller.pixels(study, series)
    return _rendered_many(request, state, refs, query, "series")


@router.get(
    "/studies/{study}/rendered", summary="WADO-RS: rendered study", responses=RENDERED_RESPONSES
)
def study_rendered(
    study: Uid, request: Request, caller: Reader, state: StateDep, query: RenderDep
) -> Response:
    refs = caller.pixels(study)
    return _rendered_many(request, state, refs, query, "study")


def _representative(refs: list[InstanceRef]) -> InstanceRef:
    """The middle image of a series (or study): what its thumbnail shows."""
    images = [r for r in refs if r.rows] or refs
    return images[len(images) // 2]


@router.get(
    "/studies/{study}/series/{series}/thumbnail",
    summary="WADO-RS: series thumbnail",
    responses=RENDERED_RESPONSES,
)
def series_thumbnail(
    study: Uid, series: Uid, request: Request, caller: Reader, state: StateDep, query: RenderDep
) -> Response:
    refs = caller.pixels(study, series)
    return _rendered(request, state, _representative(refs), 1, query, thumbnail=True)


@router.get(
    "/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail", responses=RENDERED_RESPONSES
)
def study_thumbnail(
    study: Uid, request: Request, caller: Reader, state: StateDep, query: RenderDep
) -> Response:
    refs = caller.pixels(study)
    return _rendered(request, state, _representative(refs), 1, query, thumbnail=True)
