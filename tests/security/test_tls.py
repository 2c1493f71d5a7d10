"""TLS for real: the hub over HTTPS, a gateway forwarding to it with a private CA, and DICOM
TLS on the gateway's SCP with dcmtk's echoscu / storescu (+tls). Certificates come from a CA the
test makes (tests/peers/tls.py)."""

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.tls import client_context
from imaging_hub.worklist.db.models import Instance
from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.hub import GatewayFactory, HubProcess, start_hub_process
from tests.peers.net import wait_until
from tests.peers.tls import Pki, make_pki

CR = SAMPLES / "by-modality" / "CR" / "RG1_J2KI.dcm"


def _fresh(out: Path) -> tuple[Path, str]:
    ds = pydicom.dcmread(CR)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return out, str(ds.SOPInstanceUID)


def _arrived(hub: HubProcess, sop_instance_uid: str) -> bool:
    with hub.sessions() as session:
        return (
            session.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid))
            is not None
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_hub(tmp_path: Path, pki: Pki) -> Iterator[HubProcess]:
    hub = start_hub_process(
        tmp_path / "hub",
        extra_env={
            "IMAGING_HUB_TLS_CERT_FILE": str(pki.server_cert),
            "IMAGING_HUB_TLS_KEY_FILE": str(pki.server_key),
        },
    )
    hub.url = hub.url.replace("http://", "https://")
    try:
        yield hub
    finally:
        hub.stop()


def test_hub_serves_https_and_gateway_forwards_with_private_ca(
    tls_hub: HubProcess, pki: Pki, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    hub = tls_hub
    with httpx.Client(verify=client_context(pki.ca_cert), timeout=10) as client:
        health = client.get(f"{hub.url}/healthz")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"].startswith("max-age=")
        login = client.post(
            f"{hub.url}/api/v1/auth/token",
            data={"username": "rad1", "password": hub.passwords["rad1"]},
        )
        assert login.status_code == 200
    # Without the CA the certificate is not trusted; plain HTTP is not spoken at all.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{hub.url}/healthz", timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(hub.url.replace("https://", "http://") + "/healthz", timeout=10)

    gateway = start_gateway(hub, hub_ca_file=str(pki.ca_cert))
    path, sop = _fresh(tmp_path / "cr.dcm")
    sent = storescu(gateway.port, [path], called_ae=gateway.ae_title)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: _arrived(hub, sop), timeout=60)

    # A gateway trusting another CA refuses to talk to this hub (and says why in its log).
    other = make_pki(tmp_path / "other-pki", name="other")
    doubter = start_gateway(hub, "clinic-b", "CLINIC_B", hub_ca_file=str(other.ca_cert))
    path_b, sop_b = _fresh(tmp_path / "cr-b.dcm")
    assert storescu(doubter.port, [path_b], called_ae=doubter.ae_title).returncode == 0
    wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in doubter.log_path.read_text(), timeout=60)
    assert not _arrived(hub, sop_b)


def _tls_args(pki: Pki, *, with_client_cert: bool = True) -> list[str]:
    if with_client_cert:
        return ["+tls", str(pki.client_key), str(pki.client_cert), "-pw", "+cf", str(pki.ca_cert)]
    return ["+tla", "+cf", str(pki.ca_cert)]


def test_dicom_tls_on_the_gateway_scp(
    hub: HubProcess, pki: Pki, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start_gateway(
        hub,
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_ca_file=str(pki.ca_cert),
        scp_workers=2,
    )
    # A client that connects and never says a word holds one worker's handshake for at most
    # TLS_HANDSHAKE_TIMEOUT; the other worker serves the modality meanwhile.
    with socket.create_connection(("127.0.0.1", gateway.port)):
        time.sleep(0.2)
        started = time.monotonic()
        echo = echoscu(gateway.port, called_ae=gateway.ae_title, extra=_tls_args(pki))
        assert echo.returncode == 0, echo.stdout + echo.stderr
        assert time.monotonic() - started < 8
    # Plain TCP, and TLS without a client certificate (mutual TLS is on): both refused.
    plain = echoscu(gateway.port, called_ae=gateway.ae_title)
    assert plain.returncode != 0
    anonymous = echoscu(
        gateway.port, called_ae=gateway.ae_title, extra=_tls_args(pki, with_client_cert=False)
    )
    assert anonymous.returncode != 0
    path, sop = _fresh(tmp_path / "cr.dcm")
    sent = storescu(gateway.port, [path], called_ae=gateway.ae_title, extra=_tls_args(pki))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    wait_until(lambda: _arrived(hub, sop), timeout=60)
    # The gateway kept serving after the refused connections.
    assert echoscu(gateway.port, called_ae=gateway.ae_title, extra=_tls_args(pki)).returncode == 0


def test_tls_contexts_refuse_old_protocols(pki: Pki) -> None:
    from imaging_hub.tls import server_context

    ctx = server_context(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_context(pki.ca_cert).check_hostname


def test_single_process_scp_over_tls_survives_silent_and_plain_clients(
    pki: Pki, tmp_path: Path
) -> None:
    """The default one-process SCP (start_scp with an SSL context), in process."""
    from imaging_hub.dicom_gateway import scp
    from imaging_hub.dicom_gateway.spool import Spool
    from imaging_hub.tls import server_context
    from tests.peers.net import free_port

    spool = Spool(tmp_path / "spool")
    handler = scp.StoreHandler(spool, max_instance_bytes=10**9)
    ae = scp.make_ae("TLS_SCP")
    port = free_port()
    ctx = server_context(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    server = scp.start_scp(ae, handler, "127.0.0.1", port, ssl_context=ctx)
    try:
        assert echoscu(port, called_ae="TLS_SCP").returncode != 0  # plain TCP: refused
        path, _ = _fresh(tmp_path / "cr.dcm")
        sent = storescu(port, [path], called_ae="TLS_SCP", extra=_tls_args(pki))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert handler.received == 1
        assert echoscu(port, called_ae="TLS_SCP", extra=_tls_args(pki)).returncode == 0
    finally:
        server.shutdown()
        spool.close()
