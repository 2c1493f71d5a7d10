"""The gateway's HTTP client to the hub: instance upload, study completion.

Errors are classified here, by the problem+json ``code`` the hub answers (never by its message):
network trouble, 5xx, 401/408/429 and the codes in :data:`imaging_hub.errors.RETRYABLE_CODES` are
retryable; every other refusal (a UID conflict, invalid DICOM, too large) is final and the instance
or study is parked with the hub's code and detail.
"""

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise ForwardError(
                    "The hub's TLS certificate is not trusted (CERTIFICATE_VERIFY_FAILED): "
                    "check hub_url and hub_ca_file.",
                    retryable=True,
                ) from exc
            raise ForwardError(
                f"The hub could not be reached ({type(exc).__name__}).", retryable=True
            ) from exc
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
        return response

    def put_instance(
        self, sop_instance_uid: str, data: bytes | Iterator[bytes], sha256: str
    ) -> dict[str, Any]:
        """Upload one instance; an iterator body is sent chunked (the bandwidth cap uses it)."""
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

    def heartbeat(self, status: dict[str, Any]) -> None:
        self._request("POST", "/api/v1/gateways/heartbeat", json=status)
