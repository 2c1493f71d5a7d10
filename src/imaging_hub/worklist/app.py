"""The hub's FastAPI application, built by :func:`create_app` from settings."""

import gzip
import hashlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from starlette.datastructures import Headers
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Scope

from imaging_hub import __version__
from imaging_hub.config import HubSettings
from imaging_hub.storage import ObjectStore, open_store
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.worklist import dicomweb
from imaging_hub.worklist.access.accounts import LoginThrottle
from imaging_hub.worklist.admin import institution_routes
from imaging_hub.worklist.admin import routes as admin_routes
from imaging_hub.worklist.audit import routes as audit_routes
from imaging_hub.worklist.db.session import make_engine, make_inline_engine, make_session_factory
from imaging_hub.worklist.gateways import routes as gateway_routes
from imaging_hub.worklist.http import auth_routes as access_routes
from imaging_hub.worklist.http.deps import HubState
from imaging_hub.worklist.http.middleware import (
    AccessLogMiddleware,
    ProblemFor413Middleware,
    RejectNulMiddleware,
    SecurityHeadersMiddleware,
)
from imaging_hub.worklist.http.problems import document_problems, install_error_handlers
from imaging_hub.worklist.notifications import routes as notification_routes
from imaging_hub.worklist.orders import gateway_routes as order_gateway_routes
from imaging_hub.worklist.orders import routes as order_routes
from imaging_hub.worklist.reading import consultation_routes, duty_routes
from imaging_hub.worklist.reading import routes as reading_routes
from imaging_hub.worklist.reading.assignment import sweep
from imaging_hub.worklist.reports import delivery_routes as report_delivery_routes
from imaging_hub.worklist.reports import routes as report_routes
from imaging_hub.worklist.reports import service as report_service
from imaging_hub.worklist.reports.credentials import ReportsRuntime
from imaging_hub.worklist.stats import routes as stats_routes
from imaging_hub.worklist.stats.metrics import HubCollector
from imaging_hub.worklist.studies import clinic_routes, conflict_routes, registration_routes
from imaging_hub.worklist.studies import routes as study_routes
from imaging_hub.worklist.studies.registration import LeasePolicy, SlaPolicy

log = logging.getLogger(__name__)


def make_store(settings: HubSettings) -> ObjectStore:
    """The hub's object store, from its settings (through the one factory, storage.open_store)."""
    if settings.object_store == "s3":
        return open_store(
            "s3",
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            secure=settings.s3_secure,
            create_bucket=True,
        )
    root = settings.resolved_object_store_dir()
    root.mkdir(parents=True, exist_ok=True)
    return open_store("filesystem", root=root)


class HubFastAPI(FastAPI):
    """FastAPI with our outermost middleware: outside even FastAPI's own body limiter and
    error handler, so every response (413 and 500 included) gets the security headers, a
    problem+json body and an access-log line."""

    hsts: bool = False

    def build_middleware_stack(self) -> ASGIApp:
        inner = super().build_middleware_stack()
        return AccessLogMiddleware(
            SecurityHeadersMiddleware(
                RejectNulMiddleware(ProblemFor413Middleware(inner)), hsts=self.hsts
            )
        )

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, with our RFC 9457 problem responses for every 4xx."""
        if self.openapi_schema is None:
            schema = super().openapi()
            document_problems(schema)
            self.openapi_schema = schema
        return self.openapi_schema


def static_dir() -> Path:
    return Path(str(resources.files("imaging_hub") / "viewer_static"))


def create_app(settings: HubSettings, *, store: ObjectStore | None = None) -> FastAPI:
    """Build the hub app. The database must already be migrated (``imaging-hub db upgrade``)."""
    engine = make_engine(settings.resolved_database_url())
    store = store or make_store(settings)
    # Frame reads answered on the event loop: a local SQLite file and local files only.
    inline_engine = (
        make_inline_engine(settings.resolved_database_url())
        if isinstance(store, FilesystemStore)
        else None
    )
    state = HubState(
        settings=settings,
        sessions=make_session_factory(engine),
        inline_sessions=make_session_factory(inline_engine) if inline_engine else None,
        store=store,
        sla=SlaPolicy(
            stat=timedelta(minutes=settings.sla_stat_minutes),
            urgent=timedelta(minutes=settings.sla_urgent_minutes),
            routine=timedelta(minutes=settings.sla_routine_minutes),
        ),
        login_throttle=LoginThrottle(
            max_failures=settings.login_ip_max_failures,
            window=float(settings.login_ip_window_seconds),
        ),
        lease=LeasePolicy(lease=timedelta(seconds=settings.claim_lease_seconds)),
    )

    # Report signing: the hub CA (opened or created at first use) and its timestamper, once
    # per process.
    reports = ReportsRuntime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        sweeper = threading.Thread(
            target=_sweep_loop, args=(state, stop), name="worklist-sweep", daemon=True
        )
        sweeper.start()
        try:
            yield
        finally:
            stop.set()
            sweeper.join(timeout=10)
            engine.dispose()
            if inline_engine is not None:
                inline_engine.dispose()

    app = HubFastAPI(
        title="imaging-hub",
        version=__version__,
        description="District imaging hub: worklist, reports, DICOMweb.",
        lifespan=lifespan,
        # Bodies above this are refused with 413 before a route reads them; routers that take
        # DICOM (ingest, STOW-RS) raise it for themselves in include_router(max_body_size=...).
        max_body_size=settings.max_request_body_bytes,
    )
    app.hsts = settings.tls_cert_file is not None
    app.state.hub = state
    app.state.reports = reports
    install_error_handlers(app)
    report_routes.install_report_error_handlers(app)
    order_routes.install_order_error_handlers(app)
    report_delivery_routes.install_delivery_error_handlers(app)
    # Before every FastAPI route: the hottest DICOMweb GETs (they fall through when invalid).
    app.router.routes.extend(dicomweb.fast_routes)

    @app.get("/healthz", tags=["system"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # This app's own registry (no global state across apps): the process's figures and the
    # hub's (worklist/stats/metrics.py), which the alert rules in deploy/prometheus use.
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    registry.register(HubCollector(state.sessions))

    @app.get("/metrics", tags=["system"], response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(access_routes.router)
    app.include_router(reading_routes.router)
    app.include_router(registration_routes.router, max_body_size=settings.max_instance_bytes)
    app.include_router(gateway_routes.router)
    app.include_router(study_routes.router)
    app.include_router(consultation_routes.router)
    app.include_router(notification_routes.router)
    app.include_router(stats_routes.router)
    app.include_router(conflict_routes.router)
    app.include_router(clinic_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(institution_routes.router)
    app.include_router(duty_routes.router)
    app.include_router(order_routes.router)
    app.include_router(order_gateway_routes.router)
    app.include_router(report_routes.router)
    app.include_router(report_delivery_routes.router)
    app.include_router(dicomweb.router, max_body_size=settings.dicomweb_max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            max_age=600,
        )
    app.router.routes.append(
        AppFiles("/", app=AppStaticFiles(directory=static_dir(), html=True), name="viewer")
    )
    return app


#: Path prefixes that belong to the API, never to the browser app's files.
API_PREFIXES = ("/api/", "/dicomweb/")


class AppFiles(Mount):
    """The browser app's files, at every path outside the API.

    A plain mount at ``/`` matches every path with every method, so it also answered what the
    API's routing should: a wrong method on an API path (HEAD on a DICOMweb resource, say)
    got the file server's 404 instead of 405 with ``Allow``, and an unknown API path a plain
    text 404 instead of problem+json.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and str(scope["path"]).startswith(API_PREFIXES):
            return Match.NONE, {}
        return super().matches(scope)


#: Text-like files worth compressing (the viewer bundle is 4 MB of JavaScript, its codecs WASM).
COMPRESSIBLE = (".js", ".mjs", ".css", ".html", ".json", ".txt", ".svg", ".wasm")
#: Smaller files go out as they are (gzip's header would eat the saving).
MIN_COMPRESS_BYTES = 1024


@dataclass(frozen=True)
class _Packed:
    """One app file in memory: its bytes, their gzip (or None) and a strong ETag of the bytes."""

    raw: bytes
    gz: bytes | None
    etag: str


class AppStaticFiles(StaticFiles):
    """The app's files with gzip and revalidation.

    Text-like files (JavaScript, CSS, HTML, WASM) are gzip-compressed once per version of the
    file (kept in memory, keyed by path, size and mtime; mtime 0 in the gzip header, so the
    bytes are the same in every worker) and sent compressed to clients that accept gzip. The
    files' names carry no version, so every response says ``Cache-Control: no-cache``: the
    browser keeps its copy and revalidates it with the strong ETag (a hash of the content) —
    a 304 without a body while the file is unchanged, the new file at once after an upgrade.
    ``.wasm`` goes out as ``application/wasm`` (needed for streaming compilation).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._packed: dict[tuple[str, int, int], _Packed] = {}
        self._lock = threading.Lock()

    def file_response(
        self,
        full_path: "os.PathLike[str] | str",
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        # Conditional requests are answered in get_response, against the content's ETag.
        return FileResponse(full_path, status_code=status_code, stat_result=stat_result)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if not isinstance(response, FileResponse) or response.status_code != 200:
            return response
        file_path = str(response.path)
        stat_result = response.stat_result
        if stat_result is None:
            return response
        packed = await anyio.to_thread.run_sync(self._pack, file_path, stat_result)
        compressible = file_path.endswith(COMPRESSIBLE)
        request_headers = Headers(scope=scope)
        use_gzip = packed.gz is not None and _accepts_gzip(request_headers)
        etag = f'"{packed.etag}-gz"' if use_gzip else f'"{packed.etag}"'
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        wanted = request_headers.get("if-none-match", "")
        if wanted and etag in [tag.strip().removeprefix("W/") for tag in wanted.split(",")]:
            return Response(status_code=304, headers=headers)
        media_type = response.media_type or "application/octet-stream"
        if use_gzip and packed.gz is not None:
            headers["Content-Encoding"] = "gzip"
            return Response(packed.gz, media_type=media_type, headers=headers)
        return Response(packed.raw, media_type=media_type, headers=headers)

    def _pack(self, file_path: str, stat_result: os.stat_result) -> _Packed:
        key = (file_path, stat_result.st_size, stat_result.st_mtime_ns)
        with self._lock:
            found = self._packed.get(key)
        if found is not None:
            return found
        with open(file_path, "rb") as f:
            raw = f.read()
        gz = None
        if file_path.endswith(COMPRESSIBLE) and len(raw) >= MIN_COMPRESS_BYTES:
            packed_bytes = gzip.compress(raw, compresslevel=9, mtime=0)
            gz = packed_bytes if len(packed_bytes) < len(raw) else None
        found = _Packed(raw=raw, gz=gz, etag=hashlib.sha256(raw).hexdigest()[:32])
        with self._lock:
            for old in [k for k in self._packed if k[0] == file_path]:
                del self._packed[old]  # an older version of the same file
            self._packed[key] = found
        return found


def _accepts_gzip(headers: Headers) -> bool:
    for item in headers.get("accept-encoding", "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _sweep_loop(state: HubState, stop: threading.Event) -> None:
    """Expired leases, overdue STAT studies, auto-assignment and unacknowledged critical
    results, every ``sweep_seconds``.

    Runs in every worker process; each step is a conditional update, so concurrent sweeps do
    each piece of work once. Stops when the app shuts down.
    """
    interval = max(0.05, state.settings.sweep_seconds)
    while not stop.wait(interval):
        try:
            sweep(
                sessions=state.sessions,
                lease=state.lease,
                auto_assign_enabled=state.settings.auto_assign,
            )
            report_service.sweep(
                sessions=state.sessions,
                timeout=timedelta(minutes=state.settings.report_critical_ack_minutes),
            )
        except Exception:  # keep sweeping after a database hiccup; the error is logged
            log.exception("worklist sweep failed")


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers: settings from env and TOML."""
    return create_app(HubSettings())
