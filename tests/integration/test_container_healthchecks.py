"""The images' HEALTHCHECK scripts (docker/*-healthcheck.py) against the real hub and gateway.

Each script runs as the image runs it: a separate interpreter, configured only by the service's
own environment variables. Healthy while the service answers; unhealthy once it is gone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.peers.hub import GatewayFactory, HubProcess

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def check(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_hub_and_gateway_healthchecks_follow_the_services(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(hub)
    hub_result = check("hub-healthcheck.py", hub.env)
    assert hub_result.returncode == 0, hub_result.stderr
    gateway_result = check("gateway-healthcheck.py", gateway.env)
    assert gateway_result.returncode == 0, gateway_result.stderr

    # with a certificate configured the check asks over HTTPS: against this plain-HTTP hub that
    # fails, which shows the scheme follows the setting
    tls = check("hub-healthcheck.py", {**hub.env, "IMAGING_HUB_TLS_CERT_FILE": "/x/cert.pem"})
    assert tls.returncode == 1
    assert f"https://127.0.0.1:{hub.port}/healthz" in tls.stderr

    gateway.kill()  # a crashed gateway: nothing answers on its port any more
    gone = check("gateway-healthcheck.py", gateway.env)
    assert gone.returncode == 1
    assert f"no DICOM answer on 127.0.0.1:{gateway.port}" in gone.stderr

    hub.kill()
    down = check("hub-healthcheck.py", hub.env)
    assert down.returncode == 1
    assert f"http://127.0.0.1:{hub.port}/healthz" in down.stderr
