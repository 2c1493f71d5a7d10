"""WADO-RS domain (PS3.18 10.4): what to send for a retrieve, negotiated and streamed.

Instances are streamed from the object store chunk by chunk when they go out as stored; an
instance that must be converted (the client asked for an uncompressed syntax) is converted
alone, so memory holds at most one instance at a time, never a whole study.
"""

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging_hub.dicom.dicomjson import dataset_to_json
from imaging_hub.dicom.frames import (
    MEDIA_TYPES,
    FrameLayout,
    FrameLayoutCache,
    FrameSet,
    can_convert,
    convert_instance,
    frame_layout,
    read_header,
    read_native_frame,
)
from imaging_hub.dicom.frames import read_frames as read_stored_frames
from imaging_hub.dicom.render import Region, RenderFormat, render_frame
from imaging_hub.dicom.transcode import read_part10
from imaging_hub.errors import InvalidDicomError, InvalidRequest, NotAcceptable, NotFound
from imaging_hub.storage import ObjectStore
from imaging_hub.worklist.dicomweb.multipart import MediaRange
from imaging_hub.worklist.dicomweb.search import InstanceRef

log = logging.getLogger(__name__)

#: PS3.18 Table 8.7.3-2: the default transfer syntax of application/dicom and octet-stream.
DEFAULT_SYNTAX = str(ExplicitVRLittleEndian)
AS_STORED = "*"


def _dicom_ranges(ranges: Sequence[MediaRange]) -> list[MediaRange]:
    return [r for r in ranges if r.media_type in ("application/dicom", "*/*", "application/*")]


def choose_syntaxes(refs: Sequence[InstanceRef], ranges: Sequence[MediaRange]) -> list[str]:
    """The transfer syntax to send each instance in, from the client's Accept ranges.

    ``transfer-syntax=*`` (or ``*/*``) means as stored; ``application/dicom`` without a
    transfer-syntax means Explicit VR Little Endian (PS3.18 8.7.3.5.2). Raises NotAcceptable
    when an instance cannot be sent in any acceptable syntax.
    """
    candidates = _dicom_ranges(ranges)
    if not candidates:
        raise NotAcceptable(
            'Instances are sent as multipart/related; type="application/dicom"; '
            "the Accept header does not allow it."
        )
    chosen = []
    for ref in refs:
        for r in candidates:
            wanted = r.transfer_syntax or (
                AS_STORED if r.media_type != "application/dicom" else DEFAULT_SYNTAX
            )
            if wanted == AS_STORED or wanted == ref.transfer_syntax_uid:
                chosen.append(ref.transfer_syntax_uid)
                break
            if can_convert(ref.transfer_syntax_uid, wanted):
                chosen.append(wanted)
                break
        else:
            asked = ", ".join(sorted({r.transfer_syntax or DEFAULT_SYNTAX for r in candidates}))
            raise NotAcceptable(
                f"Instance {ref.sop_instance_uid} is stored in transfer syntax "
                f"{ref.transfer_syntax_uid} and cannot be sent in {asked}; "
                "ask for transfer-syntax=* to receive it as stored."
            )
    return chosen


def instance_parts(
    store: ObjectStore, refs: Sequence[InstanceRef], syntaxes: Sequence[str]
) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(Content-Type, chunks) of each instance, converted when its syntax differs.

    A single instance is converted before the response starts, so a failure is still an
    HTTP error; in a multi-instance stream it can only end the stream (and is logged).
    """
    if len(refs) == 1 and syntaxes[0] != refs[0].transfer_syntax_uid:
        converted = convert_instance(store.get(refs[0].object_key), syntaxes[0])
        return iter([(f"application/dicom; transfer-syntax={syntaxes[0]}", iter([converted]))])
    return _lazy_parts(store, refs, syntaxes)


def _lazy_parts(
    store: ObjectStore, refs: Sequence[InstanceRef], syntaxes: Sequence[str]
) -> Iterator[tuple[str, Iterator[bytes]]]:
    for ref, syntax in zip(refs, syntaxes, strict=True):
        content_type = f"application/dicom; transfer-syntax={syntax}"
        if syntax == ref.transfer_syntax_uid:
            yield content_type, store.iter_chunks(ref.object_key)
        else:
            yield content_type, iter([convert_instance(store.get(ref.object_key), syntax)])


def instance_url(base: str, ref: InstanceRef) -> str:
    return (
        f"{base}/studies/{ref.study_instance_uid}/series/{ref.series_instance_uid}"
        f"/instances/{ref.sop_instance_uid}"
    )


def metadata_json(store: ObjectStore, ref: InstanceRef, *, base: str) -> dict[str, object]:
    """DICOM JSON of one stored instance's header, bulk data as BulkDataURIs.

    Available Transfer Syntax UID (PS3.18 F.2, 0008,3002) names the stored syntax (known from
    the instance's row, no extra read), so a viewer asks for its frames exactly as stored.
    """
    url = instance_url(base, ref)
    with store.open(ref.object_key) as stream:
        ds = read_header(stream)
        ds.AvailableTransferSyntaxUID = ref.transfer_syntax_uid
        return dataset_to_json(ds, bulk_data_uri=lambda tag: f"{url}/bulkdata/{tag}")


def metadata_stream(
    store: ObjectStore, refs: Sequence[InstanceRef], *, base: str
) -> Iterator[bytes]:
    """A JSON array of instance metadata, produced one instance at a time."""
    yield b"["
    for index, ref in enumerate(refs):
        if index:
            yield b","
        item = metadata_json(store, ref, base=base)
        yield json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    yield b"]"


@dataclass(frozen=True)
class FrameChoice:
    decode: bool


def choose_frame_encoding(ref: InstanceRef, ranges: Sequence[MediaRange]) -> FrameChoice:
    """Whether frames go out decoded (native) or as stored, from the Accept ranges.

    application/octet-stream without transfer-syntax (or with Explicit VR Little Endian)
    means decoded samples; ``transfer-syntax=*``, ``*/*`` or the stored syntax's own media type
    (image/jls, image/jp2, image/jpeg, ...) mean as stored.
    """
    stored = ref.transfer_syntax_uid
    stored_media = MEDIA_TYPES.get(stored)
    for r in ranges:
        ts = r.transfer_syntax
        if r.media_type == "application/octet-stream":
            if ts in (None, DEFAULT_SYNTAX):
                return FrameChoice(decode=True)
            if ts in (AS_STORED, stored):
                return FrameChoice(decode=False)
        elif ts in (None, AS_STORED, stored) and (
            r.media_type in ("*/*", "image/*") or r.media_type == stored_media
        ):
            return FrameChoice(decode=False)
    offered = "application/octet-stream" + (f" or {stored_media}" if stored_media else "")
    raise NotAcceptable(
        f"The frames of this instance are available as {offered} "
        f"(stored in transfer syntax {stored})."
    )


def layout_of(store: ObjectStore, ref: InstanceRef, layouts: FrameLayoutCache) -> FrameLayout:
    """Where the frames of *ref* lie, from the cache or from its header (read once)."""

    def load() -> FrameLayout:
        with store.open(ref.object_key) as stream:
            return frame_layout(stream)

    if not ref.sha256:  # no version to key the cache by: never cache
        return load()
    return layouts.get((ref.object_key, ref.sha256), load)


def read_frames(
    store: ObjectStore,
    ref: InstanceRef,
    numbers: Sequence[int],
    *,
    decode: bool,
    layouts: FrameLayoutCache,
) -> FrameSet:
    """Frames *numbers* of a stored instance (see :func:`imaging_hub.dicom.frames.read_frames`).

    When the cached layout locates them (native frames; compressed frames asked for as
    stored, one fragment each, or the fragments of a single frame), each frame is one ranged
    read of the object and the header is not read again; otherwise the file is read the
    general way.
    """
    layout = layout_of(store, ref, layouts)
    if layout.ranges is not None and (layout.native or not decode):
        frames = []
        for number in numbers:
            offset, length = layout.frame_range(number)
            frame = store.read_range(ref.object_key, offset, length)
            if len(frame) != length:
                raise InvalidDicomError("The stored Pixel Data is shorter than its header says.")
            frames.append(layout.join(frame))
        syntax = DEFAULT_SYNTAX if layout.native else layout.transfer_syntax_uid
        return FrameSet(frames, syntax)
    with store.open(ref.object_key) as stream:
        return read_stored_frames(stream, numbers, decode=decode)


def cheap_read_bytes(
    ref: InstanceRef, numbers: Sequence[int], *, decode: bool, layouts: FrameLayoutCache
) -> int | None:
    """The bytes :func:`read_frames` would read if it were only ranged reads by a cached
    layout, else None (it would read the header, or decode)."""
    layout = layouts.peek((ref.object_key, ref.sha256)) if ref.sha256 else None
    if layout is None or layout.ranges is None or not (layout.native or not decode):
        return None
    return sum(layout.frame_range(number)[1] for number in numbers)


def frame_content_type(frames: FrameSet) -> str:
    return f"{frames.media_type}; transfer-syntax={frames.transfer_syntax_uid}"


@dataclass(frozen=True)
class RenderOptions:
    """Rendering parameters of PS3.18 8.3.5.1: window, viewport, quality, format."""

    fmt: RenderFormat = "jpeg"
    window_center: float | None = None
    window_width: float | None = None
    window_function: str = "LINEAR"
    viewport: tuple[int, int] | None = None
    quality: int = 90
    region: Region | None = None


def parse_render_options(
    *,
    accept: Sequence[MediaRange],
    window: str | None,
    viewport: str | None,
    quality: str | None,
    thumbnail: bool = False,
) -> RenderOptions:
    """Parse and check rendered/thumbnail parameters; raises InvalidRequest or NotAcceptable."""
    fmt: RenderFormat | None = None
    for r in accept:
        if r.media_type in ("image/jpeg", "image/*", "*/*"):
            fmt = "jpeg"
            break
        if r.media_type == "image/png":
            fmt = "png"
            break
    if fmt is None:
        raise NotAcceptable("Rendered images are available as image/jpeg or image/png.")
    center = width = None
    function = "LINEAR"
    if window:
        parts = [p.strip() for p in window.split(",")]
        if len(parts) not in (2, 3):
            raise InvalidRequest("The window parameter is center,width[,function].")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise InvalidRequest("The window center and width must be numbers.") from None
        if not width > 0 or width > 1e9 or abs(center) > 1e9:
            raise InvalidRequest("The window width must be greater than zero.")
        if len(parts) == 3:
            function = parts[2].upper()
            if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
                raise InvalidRequest("The window function must be linear, linear-exact or sigmoid.")
    size = (128, 128) if thumbnail else None
    region: Region | None = None
    if viewport:
        size, region = parse_viewport(viewport)
    q = 90
    if quality:
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise InvalidRequest("The quality parameter must be an integer from 1 to 100.")
        q = int(quality)
    return RenderOptions(fmt, center, width, function, size, q, region)


MAX_VIEWPORT = 16384
MAX_REGION = 1 << 20


def _viewport_int(text: str, name: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"The viewport's {name} must be an integer.") from None
    if not low <= value <= high:
        raise InvalidRequest(f"The viewport's {name} must be between {low} and {high}.")
    return value


def parse_viewport(text: str) -> tuple[tuple[int, int], Region | None]:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3): the size to fit and the source region.

    *sx*, *sy*, *sw*, *sh* may be empty (their defaults, see
    :func:`imaging_hub.dicom.render.crop`); a negative *sw* or *sh* flips. Raises
    InvalidRequest for anything else.
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise InvalidRequest("The viewport parameter is vw,vh or vw,vh,sx,sy,sw,sh.")
    vw = _viewport_int(parts[0], "width", low=1, high=MAX_VIEWPORT)
    vh = _viewport_int(parts[1], "height", low=1, high=MAX_VIEWPORT)
    if len(parts) == 2:
        return (vw, vh), None
    sx, sy = (
        None if not p else _viewport_int(p, name, low=0, high=MAX_REGION)
        for p, name in ((parts[2], "sx"), (parts[3], "sy"))
    )
    sw, sh = (
        None if not p else _viewport_int(p, name, low=-MAX_REGION, high=MAX_REGION)
        for p, name in ((parts[4], "sw"), (parts[5], "sh"))
    )
    if sw == 0 or sh == 0:
        raise InvalidRequest("The viewport's source region must not be empty (sw, sh not 0).")
    return (vw, vh), (sx, sy, sw, sh)


def wants_multipart(ranges: Sequence[MediaRange]) -> bool:
    """Whether the first image range of the Accept header asks for multipart/related."""
    for r in ranges:
        if r.media_type in ("image/jpeg", "image/png", "image/*", "*/*"):
            return r.multipart
    return False


def rendered_parts(
    store: ObjectStore, refs: Sequence[InstanceRef], options: RenderOptions
) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(Content-Type, image) of the first frame of each instance, rendered one at a time.

    Runs while the response streams, so an instance that cannot be rendered is left out
    (and logged): the answer has already started.
    """
    media_type = f"image/{options.fmt}"
    for ref in refs:
        try:
            image = render(store, ref, 1, options)
        except (InvalidDicomError, ValueError) as exc:
            log.info("Instance %s left out of a rendered answer: %s", ref.sop_instance_uid, exc)
            continue
        yield media_type, iter([image])


def render(store: ObjectStore, ref: InstanceRef, frame: int, options: RenderOptions) -> bytes:
    """Render frame *frame* (1-based) of a stored instance."""
    if frame < 1:
        raise InvalidRequest("Frame numbers start at 1.")
    native = None
    if ref.transfer_syntax_uid in (DEFAULT_SYNTAX, str(ImplicitVRLittleEndian)):
        with store.open(ref.object_key) as stream:
            native = read_native_frame(stream, frame - 1)
    source: Dataset | bytes = native[0] if native else store.get(ref.object_key)
    return render_frame(
        source,
        frame - 1,
        pixels=native[1] if native else None,
        window_center=options.window_center,
        window_width=options.window_width,
        window_function=options.window_function,
        size=options.viewport,
        fmt=options.fmt,
        quality=options.quality,
        region=options.region,
    )


def read_bulkdata(store: ObjectStore, ref: InstanceRef, tag: int) -> bytes:
    """The value of a binary element (top level first, else the first nested one)."""
    ds = read_part10(store.get(ref.object_key))
    for elem in ds.iterall():
        if int(elem.tag) == tag:
            value = elem.value
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            break
    raise NotFound("This instance has no bulk data element with that tag.")


def parse_frame_list(text: str) -> list[int]:
    """``1,2,5`` -> [1, 2, 5]; raises InvalidRequest for anything else."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or len(item) > 7 or int(item) < 1:
            raise InvalidRequest("Frame numbers are a comma-separated list of integers from 1.")
        numbers.append(int(item))
    if not numbers or len(numbers) > 10000:
        raise InvalidRequest("Ask for between 1 and 10000 frames.")
    return numbers
