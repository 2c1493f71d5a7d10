"""Request headers past ``max_request_header_bytes`` answer 431 and close the connection.

An outside probe found the hub accepted an 8 MB request header (buffered in memory before the
application saw it). The hub runs as a real ``imaging-hub hub serve`` process here, with two
uvicorn workers so the limit is shown to reach spawned worker processes too.
"""

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.peers.hub import HubProcess, start_hub_process

LIMIT = 16384


@pytest.fixture(scope="module")
def limited_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = start_hub_process(
        Path(tmp_path_factory.mktemp("hub")),
        extra_env={
            "IMAGING_HUB_MAX_REQUEST_HEADER_BYTES": str(LIMIT),
            "IMAGING_HUB_WORKERS": "2",
        },
    )
    try:
        yield hub
    finally:
        hub.stop()


def _send_huge_header(port: int, header_bytes: int) -> tuple[bytes, int]:
    """Send a request with one header of *header_bytes*, 64 KiB at a time, never finishing the
    headers; returns what the server answered and how many bytes it took before closing."""
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ")
        chunk = b"a" * 65536
        deadline = time.monotonic() + 30
        try:
            while sent < header_bytes and time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection: what it answered is read below
        sock.settimeout(10)
        try:
            while part := sock.recv(65536):
                answer += part
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def test_an_eight_megabyte_header_is_refused_with_431(limited_hub: HubProcess) -> None:
    answer, sent = _send_huge_header(limited_hub.port, 8 << 20)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == 431
    assert problem["code"] == "headers_too_large"
    assert str(LIMIT) in problem["detail"]
    # The server stopped reading long before 8 MB (kernel buffers take a few hundred KiB).
    assert sent < 4 << 20


def test_headers_within_the_limit_are_served(limited_hub: HubProcess) -> None:
    for _ in range(4):  # reach both workers
        response = httpx.get(
            f"{limited_hub.url}/healthz", headers={"X-Padding": "a" * (LIMIT // 2)}, timeout=10
        )
        assert response.status_code == 200


def test_many_small_headers_past_the_limit_are_refused_too(limited_hub: HubProcess) -> None:
    headers = {f"X-H{i}": "b" * 200 for i in range(LIMIT // 200 + 10)}
    response = httpx.get(f"{limited_hub.url}/healthz", headers=headers, timeout=10)
    assert response.status_code == 431
    assert response.json()["code"] == "headers_too_large"
    assert response.headers["connection"] == "close"


def test_keep_alive_requests_each_get_the_full_limit(limited_hub: HubProcess) -> None:
    with httpx.Client(base_url=limited_hub.url, timeout=10) as client:
        for _ in range(5):
            response = client.get("/healthz", headers={"X-Padding": "c" * (LIMIT * 3 // 4)})
            assert response.status_code == 200
