"""The gateway's HTTP client to the hub: instance upload, study completion, MPPS states.

Errors are classified here, by the problem+json ``code`` the hub answers (never by its message):
network trouble, 5xx, 401/408/429 and the codes in :data:`imaging_hub.errors.RETRYABLE_CODES` are
retryable; every other refusal (a UID conflict, invalid DICOM, too large) is final and the instance
or study is parked with the hub's code and detail.
"""

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from imaging_hub import __version__
from imaging_hub.errors import RETRYABLE_CODES, ForwardError
from imaging_hub.tls import client_context

log = logging.getLogger(__name__)


class HubClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        # The hub's certificate is verified against ca_file (a private CA) or the system's CAs.
        verify: Any = client_context(ca_file) if ca_file else True
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"imaging-hub-gateway/{__version__}",
            },
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=verify,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _unreachable(exc: httpx.HTTPError) -> ForwardError:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return ForwardError(
                "The hub's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED): "
                "check hub_url and hub_ca_file.",
                retryable=True,
            )
        return ForwardError(f"The hub could not be reached ({type(exc).__name__}).", retryable=True)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for_problem(response)
        return response

    @staticmethod
    def _raise_for_problem(response: httpx.Response) -> None:
        if response.status_code >= 400:
            detail, code = "", ""
            try:
                body = response.json()
                detail = str(body.get("detail", ""))[:300]
                code = str(body.get("code", ""))[:64]
            except (ValueError, AttributeError):
                detail = response.text[:300]
            retryable = (
                response.status_code >= 500
                or response.status_code in (401, 408, 429)
                or code in RETRYABLE_CODES
            )
            raise ForwardError(
                f"The hub answered {response.status_code} {code or '-'}: {detail}",
                retryable=retryable,
                code=code or f"http_{response.status_code}",
            )

    def put_instance(
        self, sop_instance_uid: str, data: bytes | Iterator[bytes], sha256: str
    ) -> dict[str, Any]:
        """Upload one instance; an iterator body is sent chunked (the bandwidth cap uses it).

        *sha256* is the body's digest, or SHA256_TRAILER when the iterator ends with it (a file
        streamed while it is still being encoded)."""
        response = self._request(
            "PUT",
            f"/api/v1/ingest/instances/{sop_instance_uid}",
            content=data,
            headers={"Content-Type": "application/dicom", "X-Content-SHA256": sha256},
        )
        result: dict[str, Any] = response.json()
        return result

    def complete_study(self, study_instance_uid: str, sop_instance_uids: list[str]) -> list[str]:
        """Tell the hub the study is stable; returns the instances the hub does not hold."""
        response = self._request(
            "POST",
            f"/api/v1/ingest/studies/{study_instance_uid}/complete",
            json={"sop_instance_uids": sop_instance_uids},
        )
        missing: list[str] = response.json().get("missing", [])
        return missing

    def post_mpps(self, mpps_uid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Report an MPPS step's state (``POST /api/v1/gateway/mpps/{uid}``; idempotent)."""
        response = self._request("POST", f"/api/v1/gateway/mpps/{mpps_uid}", json=body)
        try:
            result: dict[str, Any] = response.json()
        except ValueError:
            result = {}
        return result

    def orders(self, etag: str) -> tuple[list[Any] | None, str]:
        """The clinic's order snapshot for the Modality Worklist (``GET /api/v1/gateway/orders``).

        (items, ETag); items is None when the hub answers 304 (unchanged since *etag*).
        """
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request(
            "GET",
            "/api/v1/gateway/orders",
            headers=headers,
            timeout=httpx.Timeout(30.0, connect=10.0),
        )
        if response.status_code == 304:
            return None, etag
        try:
            body = response.json()
        except ValueError:
            body = None
        items = body.get("orders") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(items, list):
            raise ForwardError("The hub's order list is malformed.", retryable=True)
        return items, response.headers.get("ETag", "")

    def heartbeat(self, status: dict[str, Any]) -> None:
        self._request("POST", "/api/v1/gateways/heartbeat", json=status)

    # --- reports back at the clinic (docs/clinic-return.md, "Hub API for gateways") ---

    def poll_reports(self, wait: float) -> list[dict[str, Any]]:
        """Signed reports and addenda of the clinic not yet confirmed (long-poll up to *wait* s)."""
        response = self._request(
            "GET",
            "/api/v1/gateway/reports",
            params={"wait": f"{wait:g}"},
            timeout=httpx.Timeout(wait + 30.0, connect=10.0),
        )
        body = response.json()
        reports = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(reports, list):
            raise ForwardError("The hub's report list is malformed.", retryable=True)
        return [item for item in reports if isinstance(item, dict)]

    def download_report(
        self, report_id: int, kind: str, out: BinaryIO, *, max_bytes: int
    ) -> tuple[int, str]:
        """Stream the report's ``pdf`` or ``dicom`` into *out*; (size, SHA-256 hex)."""
        digest = hashlib.sha256()
        size = 0
        try:
            with self._client.stream("GET", f"/api/v1/gateway/reports/{report_id}/{kind}") as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise_for_problem(r)
                for chunk in r.iter_bytes(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise ForwardError(
                            f"The report's {kind} is larger than {max_bytes} bytes.",
                            retryable=False,
                            code="payload_too_large",
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        return size, digest.hexdigest()

    def confirm_report(self, report_id: int, sha256: str) -> str:
        """Tell the hub this gateway holds the report's PDF; the hub's ``delivered_at``."""
        response = self._request(
            "POST", f"/api/v1/gateway/reports/{report_id}/received", json={"sha256": sha256}
        )
        return str(response.json().get("delivered_at") or "")

    def acknowledge_report(self, report_id: int, acknowledgement: dict[str, Any]) -> dict[str, Any]:
        """Pass on an acknowledgement a clinic user made on the LAN page."""
        response = self._request(
            "POST", f"/api/v1/gateway/reports/{report_id}/acknowledge", json=acknowledgement
        )
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def report_acknowledgements(self, report_ids: list[int]) -> list[dict[str, Any]]:
        """Of *report_ids* (at most 100), those acknowledged at the hub: ``id``, ``sha256``,
        ``acknowledged_at``, ``acknowledged_by`` (display name), ``via``, ``method``."""
        response = self._request(
            "GET",
            "/api/v1/gateway/reports/acknowledgements",
            params={"ids": ",".join(str(int(i)) for i in report_ids)},
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        found = body.get("acknowledgements") if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise ForwardError("The hub's acknowledgement list is malformed.", retryable=True)
        return [item for item in found if isinstance(item, dict)]

    def staff(self, etag: str = "") -> tuple[dict[str, Any] | None, str]:
        """The hub's staff list for the LAN page — ``{"clinic_name": ..., "staff": [...]}``
        (user name, display name, argon2id password hash of each active clinic user) — and its
        ETag; ``None`` when it is unchanged since *etag* (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", "/api/v1/gateway/staff", headers=headers)
        new_etag = response.headers.get("ETag", "")[:200]
        if response.status_code == 304:
            return None, new_etag or etag
        body = response.json()
        staff = body.get("staff") if isinstance(body, dict) else None
        if not isinstance(staff, list):
            raise ForwardError("The hub's staff list is malformed.", retryable=True)
        name = body.get("clinic_name")
        return {
            "clinic_name": name if isinstance(name, str) else "",
            "staff": [item for item in staff if isinstance(item, dict)],
        }, new_etag
