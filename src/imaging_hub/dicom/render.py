"""Render one frame of a DICOM image to an 8-bit JPEG or PNG for display.

Backs DICOMweb ``rendered`` / ``thumbnail`` (PS3.18 8.3.5, 9.3) and the browser viewer. The
grayscale pipeline follows PS3.3 C.11 / PS3.4 N.2: Modality LUT (rescale slope/intercept or
Modality LUT Sequence, C.11.1), VOI LUT (window centre/width with VOI LUT Function, or a VOI
LUT Sequence, C.11.2), then presentation (MONOCHROME1 is inverted, C.7.6.3.1.2). Colour
images are converted to RGB: YBR_* by pydicom's decoders, PALETTE COLOR through its palette
(C.7.6.3.1.5). Only the requested frame is decoded.
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array as pydicom_pixel_array

from imaging_hub.dicom.transcode import read_part10, tolerant_reading
from imaging_hub.errors import InvalidDicomError

__all__ = ["Region", "RenderFormat", "crop", "render_frame"]

RenderFormat = Literal["jpeg", "png"]

#: A source region (sx, sy, sw, sh) of the rendered image, PS3.18 8.3.5.1.3; None = default.
Region = tuple[int | None, int | None, int | None, int | None]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _first(value: Any) -> float | None:
    """The first number of a possibly multi-valued DS/IS element, or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        if not value:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _functional_group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The per-frame, else shared, functional group item *sequence* (PS3.3 C.7.6.16)."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups)
        if items is not None and len(items) > index:
            inner = items[index].get(sequence)
            if inner is not None and len(inner) > 0:
                item: Dataset = inner[0]
                return item
    return None


def _modality_lut(arr: np.ndarray[Any, Any], ds: Dataset, frame: int) -> np.ndarray[Any, Any]:
    """Apply the Modality LUT (PS3.3 C.11.1), including enhanced multi-frame groups."""
    transform = _functional_group_item(ds, frame, "PixelValueTransformationSequence")
    if transform is not None and "RescaleSlope" in transform:
        slope = _first(transform.get("RescaleSlope")) or 1.0
        intercept = _first(transform.get("RescaleIntercept")) or 0.0
        return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    out: np.ndarray[Any, Any] = apply_modality_lut(arr, ds)
    return out


def _window(ds: Dataset, frame: int) -> tuple[float, float, str] | None:
    """The dataset's first window (centre, width, VOI LUT Function), if it has a usable one."""
    source: Dataset = ds
    voi = _functional_group_item(ds, frame, "FrameVOILUTSequence")
    if voi is not None and "WindowCenter" in voi:
        source = voi
    center = _first(source.get("WindowCenter"))
    width = _first(source.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(source.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return center, width, function


def _apply_window(
    values: np.ndarray[Any, Any], center: float, width: float, function: str = "LINEAR"
) -> np.ndarray[Any, Any]:
    """Map *values* to 0..255 with a VOI window (PS3.3 C.11.2.1.2 / C.11.2.1.3)."""
    x = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        out = ((x - center) / width + 0.5) * 255.0
    else:  # LINEAR, and the default for unknown functions
        if width < 1:
            width = 1.0
        out = ((x - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    result: np.ndarray[Any, Any] = np.clip(out, 0, 255).astype(np.uint8)
    return result


def _stretch(values: np.ndarray[Any, Any], low: float, high: float) -> np.ndarray[Any, Any]:
    """Linearly map [low, high] to 0..255 (used when there is no window)."""
    x = values.astype(np.float32, copy=False)
    span = high - low
    if span <= 0:
        return np.zeros(values.shape, dtype=np.uint8)
    result: np.ndarray[Any, Any] = np.clip((x - low) * (255.0 / span), 0, 255).astype(np.uint8)
    return result


def _overlaps(low: float, high: float, window: tuple[float, float, str]) -> bool:
    """Whether the window covers any value in [low, high] (the frame's range).

    Real files carry windows that miss their pixels entirely (e.g. a J2K plate decoded
    with an offset); such a window would render a blank image, so the frame's min/max
    is used instead.
    """
    center, width, _ = window
    return center - width / 2 <= high and center + width / 2 >= low


def _map_gray(
    values: np.ndarray[Any, Any],
    low: float,
    high: float,
    ds: Dataset,
    frame: int,
    window_center: float | None,
    window_width: float | None,
    window_function: str,
) -> np.ndarray[Any, Any]:
    """VOI and presentation (PS3.4 N.2) of Modality LUT output whose frame range is [low, high]."""
    if window_center is not None and window_width is not None:
        out = _apply_window(values, window_center, window_width, window_function)
    elif (window := _window(ds, frame)) is not None and _overlaps(low, high, window):
        out = _apply_window(values, *window)
    elif "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        lut_values = apply_voi_lut(values, ds)
        lut_data = np.asarray(ds.VOILUTSequence[0].LUTData)
        out = _stretch(lut_values, float(lut_data.min()), float(lut_data.max()))
    else:
        out = _stretch(values, low, high)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


#: Frames at least this large are mapped through a lookup table over every stored value.
LUT_MIN_PIXELS = 1 << 18


def _grayscale(
    arr: np.ndarray[Any, Any],
    ds: Dataset,
    frame: int,
    window_center: float | None,
    window_width: float | None,
    window_function: str = "LINEAR",
) -> np.ndarray[Any, Any]:
    if (
        arr.dtype.kind in "iu"
        and arr.dtype.itemsize in (1, 2)
        and arr.dtype.isnative
        and arr.size >= LUT_MIN_PIXELS
        and "ModalityLUTSequence" not in ds
    ):
        # Every step is a function of the stored value alone (rescale is linear, so the
        # frame's output range is the image of its stored min and max): compute the
        # pipeline once per possible stored value and index, instead of once per pixel.
        index_type = np.uint8 if arr.dtype.itemsize == 1 else np.uint16
        ends = _modality_lut(np.array([arr.min(), arr.max()], dtype=arr.dtype), ds, frame)
        domain = np.arange(1 << (8 * arr.dtype.itemsize), dtype=index_type).view(arr.dtype)
        values = _modality_lut(domain, ds, frame)
        lut = _map_gray(
            values,
            float(ends.min()),
            float(ends.max()),
            ds,
            frame,
            window_center,
            window_width,
            window_function,
        )
        result: np.ndarray[Any, Any] = lut[arr.view(index_type)]
        return result
    values = _modality_lut(arr, ds, frame)
    return _map_gray(
        values,
        float(values.min()),
        float(values.max()),
        ds,
        frame,
        window_center,
        window_width,
        window_function,
    )


def _to_uint8(arr: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    """Scale colour samples of *bits* significant bits to 8 bits."""
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float(2**bits - 1)
    result: np.ndarray[Any, Any] = np.clip(arr.astype(np.float32) * (255.0 / top), 0, 255).astype(
        np.uint8
    )
    return result


def _decode(ds: Dataset, frame: int) -> np.ndarray[Any, Any]:
    try:
        with tolerant_reading():
            arr: np.ndarray[Any, Any] = pydicom_pixel_array(ds, index=frame)
    except Exception as exc:  # decoders raise many types on corrupt data
        raise InvalidDicomError(
            f"The Pixel Data of frame {frame} could not be decoded ({type(exc).__name__})."
        ) from exc
    return arr


def render_frame(
    ds: Dataset | bytes,
    frame: int = 0,
    *,
    window_center: float | None = None,
    window_width: float | None = None,
    window_function: str = "LINEAR",
    size: tuple[int, int] | None = None,
    fmt: RenderFormat = "jpeg",
    quality: int = 90,
    pixels: np.ndarray[Any, Any] | None = None,
    region: Region | None = None,
) -> bytes:
    """Render frame *frame* (0-based) of *ds* as an 8-bit JPEG or PNG.

    *window_center* / *window_width* (in Modality LUT output units, e.g. HU) override the
    dataset's window when both are given (with *window_function* LINEAR, LINEAR_EXACT or
    SIGMOID, PS3.3 C.11.2.1.3); without them the dataset's first Window Center /
    Width is used (unless it misses every value of the frame), then its VOI LUT Sequence,
    then the frame's min/max. *pixels*, when given, are frame *frame* already decoded (as
    pydicom would decode it, e.g. by :func:`imaging_hub.dicom.frames.read_native_frame`), and
    *ds* may then be a header without Pixel Data. *size* is the
    maximum (width, height): the image is shrunk to fit, keeping its aspect ratio, and never
    enlarged; the result is ``(max(1, round(w * s)), max(1, round(h * s)))`` with
    ``s = min(max_w / w, max_h / h, 1)``, where w x h is the *region* when one is given
    (see :func:`crop`, applied first). *quality* applies to JPEG.

    Raises :class:`~imaging_hub.errors.InvalidDicomError` if the dataset has no Pixel Data,
    the frame is out of range or the pixels cannot be decoded, and :class:`ValueError` for
    bad rendering parameters.
    """
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"The image format must be 'jpeg' or 'png', not {fmt!r}.")
    if not 1 <= quality <= 100:
        raise ValueError("The JPEG quality must be between 1 and 100.")
    if size is not None and (size[0] < 1 or size[1] < 1):
        raise ValueError("The maximum size must be at least 1 x 1 pixels.")
    if window_width is not None and window_width <= 0:
        raise ValueError("The window width must be greater than zero.")
    if window_function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ValueError("The window function must be LINEAR, LINEAR_EXACT or SIGMOID.")
    if isinstance(ds, bytes | bytearray):
        ds = read_part10(bytes(ds))
    # Rendering reads what modalities sent: their quirks are logged, not raised (STYLE.md 12).
    with tolerant_reading():
        image = _render_image(ds, frame, window_center, window_width, window_function, pixels)
    if region is not None:
        image = crop(image, region)

    if size is not None:
        scale = min(size[0] / image.width, size[1] / image.height, 1.0)
        if scale < 1.0:
            target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            # box-reduce by the whole factor, then bilinear: fast and without aliasing
            image = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=1.0)

    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, format="JPEG", quality=quality)
    else:
        image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def crop(image: Image.Image, region: Region) -> Image.Image:
    """The *region* (sx, sy, sw, sh) of *image*, the viewport's source rectangle.

    *sx*, *sy* (default 0) are its top left corner in image pixels; *sw*, *sh* (default: to
    the right / bottom edge) its width and height. A negative *sw* or *sh* takes the region
    of that width or height from *sx*, *sy* and flips it horizontally or vertically. Raises
    ValueError when the region is empty or reaches outside the image.
    """
    sx, sy, sw, sh = region
    x = 0 if sx is None else sx
    y = 0 if sy is None else sy
    width = image.width - x if sw is None else abs(sw)
    height = image.height - y if sh is None else abs(sh)
    if (
        x < 0
        or y < 0
        or width < 1
        or height < 1
        or x + width > image.width
        or (y + height > image.height)
    ):
        raise ValueError(
            f"The viewport's source region ({x},{y} size {width}x{height}) is not inside "
            f"the {image.width}x{image.height} image."
        )
    out = image.crop((x, y, x + width, y + height))
    if sw is not None and sw < 0:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh is not None and sh < 0:
        out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return out


def _render_image(
    ds: Dataset,
    frame: int,
    window_center: float | None,
    window_width: float | None,
    window_function: str = "LINEAR",
    pixels: np.ndarray[Any, Any] | None = None,
) -> Image.Image:
    """Decode *frame* of *ds* and map it to an 8-bit L or RGB image."""
    if pixels is None and not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise InvalidDicomError("The instance has no Pixel Data to render.")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidDicomError(
            "The image has no valid Rows, Columns or Number of Frames."
        ) from exc
    if rows < 1 or columns < 1:
        raise InvalidDicomError("The image has no rows or columns.")
    if not 0 <= frame < frames:
        raise InvalidDicomError(
            f"Frame {frame} is out of range; the instance has {frames} frame(s)."
        )

    arr = _decode(ds, frame) if pixels is None else pixels
    try:
        return _to_image(arr, ds, frame, window_center, window_width, window_function)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InvalidDicomError(
            f"The image attributes do not allow rendering ({type(exc).__name__})."
        ) from exc


def _to_image(
    arr: np.ndarray[Any, Any],
    ds: Dataset,
    frame: int,
    window_center: float | None,
    window_width: float | None,
    window_function: str = "LINEAR",
) -> Image.Image:
    """Map decoded samples to an 8-bit L or RGB image (PS3.4 N.2)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits_stored = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        lut_bits = 16 if rgb.dtype.itemsize > 1 else 8
        image = Image.fromarray(_to_uint8(rgb, lut_bits), mode="RGB")
    elif samples == 3 and arr.ndim == 3:
        image = Image.fromarray(_to_uint8(arr, bits_stored), mode="RGB")
    elif arr.ndim == 2:
        gray = _grayscale(arr, ds, frame, window_center, window_width, window_function)
        image = Image.fromarray(np.ascontiguousarray(gray), mode="L")
    else:
        raise InvalidDicomError(
            f"Photometric Interpretation {photometric or '(none)'} with {samples} samples "
            "per pixel cannot be rendered."
        )

    return image
