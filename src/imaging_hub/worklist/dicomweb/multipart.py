"""multipart/related (RFC 2387) for DICOMweb: Accept header parsing, streamed responses, and a
streaming parser for STOW-RS request bodies that spools parts to temporary files.
"""

import hashlib
import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from starlette.concurrency import run_in_threadpool

from imaging_hub.errors import InvalidRequest

SPOOL_IN_MEMORY = 8 << 20


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header; for ``multipart/related`` the ``type`` parameter."""

    media_type: str  # e.g. application/dicom, application/octet-stream, image/jls, */*
    multipart: bool
    transfer_syntax: str | None
    quality: float


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and its parameters (keys lower case, values unquoted)."""
    head, *params = _split_outside_quotes(value, ";")
    parsed: dict[str, str] = {}
    for param in params:
        key, eq, val = param.partition("=")
        if not eq:
            continue
        parsed[key.strip().lower()] = val.strip().strip('"')
    return head.strip().lower(), parsed


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first; no header means ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*", False, None, 1.0)]
    ranges = []
    for item in _split_outside_quotes(header, ","):
        if not item.strip():
            continue
        media_type, params = parse_media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            raise InvalidRequest("The Accept header has an invalid q value.") from None
        if media_type == "multipart/related":
            inner = params.get("type", "*/*").lower()
            ranges.append(MediaRange(inner, True, params.get("transfer-syntax"), quality))
        else:
            ranges.append(MediaRange(media_type, False, params.get("transfer-syntax"), quality))
    ranges.sort(key=lambda r: -r.quality)
    return [r for r in ranges if r.quality > 0]


def new_boundary() -> str:
    return secrets.token_hex(16)


#: Bytes gathered from the store per thread hop while streaming a multipart response.
BATCH_BYTES = 1 << 20


def multipart_pieces(
    parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str
) -> Iterator[bytes]:
    """The pieces of a multipart/related body: each part's header, its chunks, delimiters."""
    delimiter = f"--{boundary}".encode()
    for content_type, chunks in parts:
        yield delimiter + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n"
        yield from chunks
        yield b"\r\n"
    yield delimiter + b"--\r\n"


def _pull(pieces: Iterator[bytes], limit: int) -> list[bytes]:
    """The next pieces, about *limit* bytes of them (empty at the end)."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= limit:
            break
    return batch


async def multipart_stream(
    parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str
) -> AsyncIterator[bytes]:
    """A multipart/related body streamed as the parts are read.

    Reading (object store, conversions) runs in the thread pool, about a megabyte per hop,
    and each batch of small pieces goes out as one write. Memory holds at most one batch
    plus one store chunk, whatever the number of parts.
    """
    pieces = multipart_pieces(parts, boundary)
    while batch := await run_in_threadpool(_pull, pieces, BATCH_BYTES):
        if len(batch) > 1 and max(len(piece) for piece in batch) < BATCH_BYTES:
            yield b"".join(batch)
        else:  # a large piece (a whole frame): send it as it is, never copied
            for piece in batch:
                yield piece


@dataclass
class ReceivedPart:
    """One part of a STOW-RS request, spooled to a temporary file."""

    content_type: str
    body: IO[bytes]
    size: int = 0
    sha256: str = ""
    too_large: bool = False
    content_location: str = ""  # names a bulk data part (STOW-RS metadata + bulk data)


@dataclass
class MultipartReader:
    """Feeds a multipart/related body chunk by chunk; parts larger than *max_part* are dropped
    (marked ``too_large``) instead of being kept."""

    boundary: str
    max_part: int
    parts: list[ReceivedPart] = field(default_factory=list)
    _finished: bool = False

    def __post_init__(self) -> None:
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[str, str] = {}
        self._digest = hashlib.sha256()
        self._current: ReceivedPart | None = None
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._on_field,
            "on_header_value": self._on_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        self._parser = MultipartParser(self.boundary, callbacks)  # type: ignore[arg-type]

    def _part_begin(self) -> None:
        self._headers = {}
        self._digest = hashlib.sha256()

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        content_type = self._headers.get("content-type", "")
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self._current = ReceivedPart(
            content_type=content_type,
            body=body,
            content_location=self._headers.get("content-location", ""),
        )
        self.parts.append(self._current)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None or part.too_large:
            return
        chunk = data[start:end]
        part.size += len(chunk)
        if part.size > self.max_part:
            part.too_large = True
            part.body.close()
            return
        self._digest.update(chunk)
        part.body.write(chunk)

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.sha256 = self._digest.hexdigest()
            if not self._current.too_large:
                self._current.body.seek(0)
        self._current = None

    def _end(self) -> None:
        self._finished = True

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"The multipart body is malformed: {exc}.") from None

    def finish(self) -> list[ReceivedPart]:
        """The parts, once the closing boundary was read; else InvalidRequest."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequest(f"The multipart body is malformed: {exc}.") from None
        if not self._finished:
            raise InvalidRequest("The multipart body ends before its closing boundary.")
        return self.parts

    def close(self) -> None:
        for part in self.parts:
            part.body.close()


_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


#: The ``type`` of a STOW-RS body: Part-10 instances, or DICOM JSON plus bulk data parts.
STOW_PART_TYPES = ("application/dicom", "application/dicom+json")


def stow_boundary(content_type: str | None) -> tuple[str, str]:
    """The boundary and the ``type`` of a STOW-RS request's multipart/related Content-Type."""
    from imaging_hub.errors import UnsupportedMediaType

    media_type, params = parse_media_type(content_type or "")
    if media_type != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" (or '
            'type="application/dicom+json" with bulk data parts) request bodies.'
        )
    part_type = params.get("type", "application/dicom").lower()
    if part_type not in STOW_PART_TYPES:
        raise UnsupportedMediaType(
            f"STOW-RS takes application/dicom parts (whole instances) or "
            f"application/dicom+json metadata with bulk data parts, not {part_type}."
        )
    boundary = params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise InvalidRequest("The multipart/related Content-Type has no valid boundary.")
    return boundary, part_type
