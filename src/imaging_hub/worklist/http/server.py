"""How the hub's HTTP server runs: the uvicorn options ``hub serve`` and the demo share, and the
request-header limit.

uvicorn's httptools parser (llhttp) has no limit on the size of a request's headers: a client
could send megabytes of header that the server buffers before the application sees a byte. The
hub's protocol counts the bytes of each request until its headers are complete and answers
``431 Request Header Fields Too Large`` (problem+json, code ``headers_too_large``) once they
pass ``max_request_header_bytes``, then closes the connection. What is buffered meanwhile is
bounded by the limit plus one read (64 KiB).

The limit travels in uvicorn's own ``h11_max_incomplete_event_size`` setting, which also bounds
the h11 parser, so that worker processes (spawned with a copy of the config) apply it too.
"""

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imaging_hub.config import HubSettings
from imaging_hub.worklist.http.problems import HTTP_CODES, PROBLEM_JSON, problem_body

DEFAULT_MAX_HEADER_BYTES = 65536

#: How long uvicorn's supervisor waits for a worker process to answer its health ping before it
#: kills and replaces it (uvicorn's default is 5 s). The answer comes from a thread of the worker,
#: which needs the GIL: a worker busy rendering and signing a report on a loaded machine can take
#: longer than 5 s, and killing it would cut every request it serves. Only a hung worker is meant.
WORKER_HEALTHCHECK_SECONDS = 60


class _HeadersTooLarge(Exception):
    """Raised in a parser callback: httptools turns it into a parser error, which uvicorn
    answers through :meth:`HeaderLimitedProtocol.send_400_response` (431 then)."""


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on the bytes of a request's headers (431).

    Two counts: the parsed request line and headers (exact, checked as each header completes)
    and the raw bytes received while the headers are incomplete (one huge header never
    completes, and the parser buffers it).
    """

    _parsed_bytes = 0
    _raw_bytes = 0
    _in_headers = True
    _too_large = False

    @property
    def max_header_bytes(self) -> int:
        return int(self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES)

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._too_large = True
            raise _HeadersTooLarge

    def on_message_begin(self) -> None:
        self._parsed_bytes = self._raw_bytes = 0
        self._in_headers = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        counting = self._in_headers
        super().data_received(data)
        if not counting or not self._in_headers or self.transport.is_closing():
            return
        self._raw_bytes += len(data)
        if self._raw_bytes > self.max_header_bytes:
            self._too_large = True
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        limit = self.max_header_bytes
        body = json.dumps(
            problem_body(
                431,
                "Request Header Fields Too Large",
                f"The request's headers exceed {limit} bytes.",
                HTTP_CODES[431],
            )
        ).encode()
        self.logger.warning("Request refused: headers larger than %d bytes", limit)
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            + b"content-type: "
            + PROBLEM_JSON.encode()
            + b"\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()
        self._in_headers = False


def server_options(settings: HubSettings) -> dict[str, Any]:
    """uvicorn options for the hub: the header limit, no server header, our own access log
    (without query strings, which may carry names), a patient worker health check, TLS when
    configured."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,
        "server_header": False,
        "http": HeaderLimitedProtocol,
        "h11_max_incomplete_event_size": settings.max_request_header_bytes,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
    }
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    return options
