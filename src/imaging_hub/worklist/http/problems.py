"""Errors to RFC 9457 problem+json answers, in one place.

Every answer carries the error's stable ``code`` (see :mod:`imaging_hub.errors` and
docs/errors.md) beside the human ``detail``: the browser app translates by code, gateways decide
retry or park by code.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from imaging_hub.errors import (
    Conflict,
    Forbidden,
    ImagingHubError,
    InvalidDicomError,
    InvalidRequest,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    StorageError,
    UnsupportedMediaType,
)
from imaging_hub.worklist.access.accounts import AuthenticationFailed, TooManyAttempts, WeakPassword
from imaging_hub.worklist.http.deps import Unauthenticated

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

#: Codes of answers that no domain error raised (the framework's own refusals).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_attempts",
    431: "headers_too_large",
}


def problem_body(status: int, title: str, detail: str, code: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}


def problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
) -> Response:
    """An RFC 9457 problem document with our ``code`` member."""
    return JSONResponse(
        problem_body(status, title, detail, code or HTTP_CODES.get(status, f"http_{status}")),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem document; `code` is stable and machine-readable.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail", "code"],
}
PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "Bad input, not signed in, not allowed, not found, conflict, too large "
    "(RFC 9457 problem document).",
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


SERVER_PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "The object store, the signing keys or the database is unavailable: try again "
    "later (RFC 9457 problem document).",
    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def document_problems(schema: dict[str, Any]) -> None:
    """Document every 4xx answer as problem+json (FastAPI documents only its own 422 shape)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            default_422 = responses.get("422", {})
            if "HTTPValidationError" in str(default_422):
                del responses["422"]
            responses.setdefault("4XX", PROBLEM_RESPONSE)
            responses.setdefault("5XX", SERVER_PROBLEM_RESPONSE)


#: Domain errors and their HTTP status; the most specific class that matches wins.
STATUS: list[tuple[type[Exception], int, str]] = [
    (Unauthenticated, 401, "Unauthorized"),
    (AuthenticationFailed, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not Found"),
    (Conflict, 409, "Conflict"),
    (WeakPassword, 422, "Unprocessable Content"),
    (InvalidDicomError, 422, "Invalid DICOM"),
    (InvalidRequest, 400, "Bad Request"),
    (NotAcceptable, 406, "Not Acceptable"),
    (PayloadTooLarge, 413, "Content Too Large"),
    (UnsupportedMediaType, 415, "Unsupported Media Type"),
    (StorageError, 503, "Storage Unavailable"),
]


def _code_of(exc: Exception, status: int) -> str:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else HTTP_CODES.get(status, f"http_{status}")


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, status, title in STATUS:

        def handler(
            request: Request, exc: Exception, status: int = status, title: str = title
        ) -> Response:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            if status == 503:
                log.error("storage failure on %s: %s", request.url.path, exc)
            return problem(status, title, str(exc), headers, code=_code_of(exc, status))

        app.add_exception_handler(exc_type, handler)

    def generic(request: Request, exc: Exception) -> Response:
        log.error("unhandled domain error on %s: %s", request.url.path, exc)
        return problem(400, "Bad Request", str(exc), code=_code_of(exc, 400))

    app.add_exception_handler(ImagingHubError, generic)

    def too_many(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TooManyAttempts)
        return problem(
            429,
            "Too Many Requests",
            str(exc),
            {"Retry-After": str(exc.retry_after)},
            code=exc.code,
        )

    app.add_exception_handler(TooManyAttempts, too_many)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, str(exc.detail), str(exc.detail), headers)

    app.add_exception_handler(StarletteHTTPException, http_error)

    def data_error(request: Request, exc: Exception) -> Response:
        # PostgreSQL refuses NUL characters and over-long values that SQLite would store.
        log.warning("database refused a value on %s: %s", request.url.path, type(exc).__name__)
        return problem(
            422,
            "Unprocessable Content",
            "A value is too long or contains characters that cannot be stored (such as NUL).",
            code="value_not_storable",
        )

    app.add_exception_handler(DataError, data_error)

    def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return problem(
            422,
            "Unprocessable Content",
            "; ".join(parts) or "Invalid request.",
            code="validation_failed",
        )

    app.add_exception_handler(RequestValidationError, validation_error)
