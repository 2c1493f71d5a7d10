"""ASGI middleware of the hub: security headers on every response, and an access log that
never writes query strings (they can carry patient names, e.g. ``?patient=``).

Pure ASGI (no BaseHTTPMiddleware), so streamed responses stay streamed.
"""

import json
import logging
import time
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imaging_hub.worklist.http.problems import problem_body

access_log = logging.getLogger("imaging_hub.access")

# The browser app: scripts, styles, images only from the hub itself; no inline script or style;
# never framed. DICOMweb and API responses carry it too (harmless, and it covers any HTML error).
# 'wasm-unsafe-eval' lets the viewer's decoding worker compile its WASM codecs (JPEG-LS, JPEG
# 2000, JPEG); it does not allow eval(). The worker is a same-origin file (worker-src 'self').
# index.html's <meta> carries the same policy (minus frame-ancestors): keep the two equal.
APP_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's interactive API docs load Swagger UI / ReDoc from a CDN with an inline bootstrap.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), "
    "interest-cohort=()"
)
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(*, path: str, https: bool) -> Iterable[tuple[str, str]]:
    """The headers added to every response of the hub."""
    yield "Content-Security-Policy", DOCS_CSP if path.startswith(DOCS_PATHS) else APP_CSP
    yield "X-Content-Type-Options", "nosniff"
    yield "X-Frame-Options", "DENY"
    yield "Referrer-Policy", "no-referrer"
    yield "Permissions-Policy", PERMISSIONS_POLICY
    yield "Cross-Origin-Opener-Policy", "same-origin"
    if path.startswith("/api/"):
        yield "Cache-Control", "no-store"
    if https:
        yield "Strict-Transport-Security", HSTS


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` (without overriding a header a route set itself)."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        https = self.hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in security_headers(path=path, https=https):
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AccessLogMiddleware:
    """One log line per request: client, method, path (no query string), status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s "%s %s" %d %.1fms',
                client[0],
                scope.get("method", ""),
                scope.get("path", ""),
                status or 500,
                (time.perf_counter() - start) * 1000,
            )


class ProblemFor413Middleware:
    """Starlette's request body limiter answers 413 in plain text; make it problem+json."""

    BODY = json.dumps(
        problem_body(
            413,
            "Content Too Large",
            "The request body is larger than this endpoint accepts.",
            "payload_too_large",
        )
    ).encode()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def rewrite(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                content_type = MutableHeaders(scope=message).get("content-type", "")
                if content_type.startswith("text/plain"):
                    rewriting = True
                    headers = MutableHeaders(scope=message)
                    headers["content-type"] = "application/problem+json"
                    headers["content-length"] = str(len(self.BODY))
            elif message["type"] == "http.response.body" and rewriting:
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": self.BODY, "more_body": False}
            await send(message)

        await self.app(scope, receive, rewrite)


class RejectNulMiddleware:
    """Refuses a NUL character anywhere in the path or query string (400 problem+json).

    No identifier or filter of ours contains one; PostgreSQL cannot store one; and a streamed
    answer (CSV, DICOMweb) could otherwise fail after its first bytes were sent.
    """

    BODY = json.dumps(
        problem_body(400, "Bad Request", "The URL contains a NUL character.", "bad_request")
    ).encode()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            path: str = scope.get("path", "")
            if "\x00" in path or b"%00" in query.lower() or b"\x00" in query:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(self.BODY)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": self.BODY})
                return
        await self.app(scope, receive, send)
