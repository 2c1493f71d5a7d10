"""The clinic gateway box (deploy/gateway/): its systemd unit, journald drop-in, install script.

No systemd runs here, so the unit is not started: ``systemd-analyze verify`` and
``systemd-analyze security --offline`` check it, shellcheck checks the install script, and the
script is run with input it must refuse before it changes anything. Each tool is a test peer
(scripts/install-peers.sh): a missing one fails the test.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tomllib
from pathlib import Path

import pytest

from imaging_hub.config import CONFIG_ENV, GatewaySettings
from tests.unit.test_deploy_files import REPO, run, tool

GATEWAY = REPO / "deploy" / "gateway"
UNIT = GATEWAY / "imaging-hub-gateway.service"
INSTALL = GATEWAY / "install.sh"


def unit_options() -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            options.setdefault(key, []).append(value)
    return options


def test_gateway_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a stand-in, as the installer's venv would
    executable = tmp_path / "imaging-hub"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/imaging-hub/venv/bin/imaging-hub", str(executable))
    )
    result = run(tool("systemd-analyze"), "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys or bad values only warn

    # a wrong option is reported, so an empty stderr above means something
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in run(tool("systemd-analyze"), "verify", str(broken)).stderr

    security = run(tool("systemd-analyze"), "security", "--offline=yes", str(unit))
    assert security.returncode == 0, security.stderr
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert exposure is not None, security.stdout[-500:]
    assert float(exposure.group(1)) <= 2.0, security.stdout  # "OK" on systemd's scale


def test_gateway_unit_is_hardened_and_restarts() -> None:
    options = unit_options()
    expected = {
        "Restart": ["on-failure"],
        "User": ["imaging-hub"],
        "Group": ["imaging-hub"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "PrivateDevices": ["yes"],
        "ReadWritePaths": ["/var/lib/imaging-hub"],
        "WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert options.get(key) == value, key
    exec_start = options["ExecStart"][0]
    assert exec_start.startswith("/opt/imaging-hub/venv/bin/imaging-hub gateway serve")
    assert "--config /etc/imaging-hub/gateway.toml" in exec_start
    install = INSTALL.read_text()
    assert 'readonly CONFIG="${CONFIG_DIR}/gateway.toml"' in install
    assert "readonly CONFIG_DIR=/etc/imaging-hub" in install
    assert 'spool_dir = \\"${STATE_DIR}/spool\\"' in install
    assert "readonly STATE_DIR=/var/lib/imaging-hub" in install


def test_journald_drop_in_bounds_the_gateway_logs() -> None:
    text = (GATEWAY / "journald-imaging-hub.conf").read_text()
    assert "[Journal]" in text
    assert re.search(r"^SystemMaxUse=\d+[MG]$", text, flags=re.MULTILINE)
    assert re.search(r"^MaxRetentionSec=\d+day$", text, flags=re.MULTILINE)


def test_install_script_passes_shellcheck() -> None:
    text = INSTALL.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(INSTALL, os.X_OK)
    result = run(tool("shellcheck"), "--shell=bash", "--severity=style", str(INSTALL))
    assert result.returncode == 0, result.stdout + result.stderr
    for required in (
        '--require-hashes -r "${source_dir}/requirements/lock.txt"',
        "--no-deps --no-build-isolation",
        'chmod 0640 "${CONFIG}"',
        "systemctl enable",
        "useradd --system",
    ):
        assert required in text, required


def install(*args: str, token: str | None = None, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run install.sh with input it must refuse before it changes anything."""
    env = {"PATH": os.environ["PATH"]}
    if token is not None:
        env["IMAGING_HUB_GATEWAY_HUB_TOKEN"] = token
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


GOOD_TOKEN = "gw_" + "A" * 43


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["--clinic", "Clinic A", "--hub-url", "https://hub.example.org"], GOOD_TOKEN, "slug"),
        (["--clinic", "clinic-a/../b", "--hub-url", "https://hub.example.org"], GOOD_TOKEN, "slug"),
        (
            ["--clinic", "clinic-a", "--ae-title", "lower", "--hub-url", "https://h.example"],
            GOOD_TOKEN,
            "AE title",
        ),
        (["--clinic", "clinic-a", "--hub-url", 'https://h"; rm -rf /; "'], GOOD_TOKEN, "hub URL"),
        (["--clinic", "clinic-a", "--hub-url", "ftp://hub.example.org"], GOOD_TOKEN, "hub URL"),
        (["--clinic", "clinic-a", "--hub-url", "https://h.example"], 'abc"\nhub_url="x', "token"),
        (["--clinic", "clinic-a", "--hub-url", "https://h.example"], None, "token is required"),
        (["--hub-url", "https://h.example"], GOOD_TOKEN, "--clinic is required"),
        (
            ["--clinic", "clinic-a", "--hub-url", "https://h.example", "--dicom-port", "70000"],
            GOOD_TOKEN,
            "DICOM port",
        ),
        (["--clinic", "clinic-a", "--bogus"], GOOD_TOKEN, "unknown option"),
        (["--clinic"], GOOD_TOKEN, "needs a value"),
    ],
)
def test_install_script_refuses_bad_input_before_changing_anything(
    args: list[str], token: str | None, message: str, tmp_path: Path
) -> None:
    before = {p: p.exists() for p in (Path("/etc/imaging-hub"), Path("/opt/imaging-hub"))}
    result = install(*args, token=token, tmp=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("install.sh: ")
    assert result.stdout == ""
    assert {p: p.exists() for p in before} == before
    if token:
        assert token not in result.stderr  # a token is never echoed


def test_install_script_reads_the_token_from_a_file_and_checks_the_release(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN + "\n")
    release = tmp_path / "not-a-release"
    release.mkdir()
    result = install(
        "--clinic", "clinic-a", "--hub-url", "https://hub.example.org",
        "--token-file", str(token_file), "--source", str(release), tmp=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not an imaging-hub release" in result.stderr
    assert GOOD_TOKEN not in result.stderr
    missing = install("--token-file", str(tmp_path / "nope"), tmp=tmp_path)
    assert missing.returncode == 2
    assert "cannot read the token file" in missing.stderr


def test_install_script_help() -> None:
    result = run("bash", str(INSTALL), "--help")
    assert result.returncode == 0
    assert "--token-file" in result.stdout
    assert "Idempotent" in result.stdout


def test_install_peers_installs_the_deploy_tools() -> None:
    script = (REPO / "scripts" / "install-peers.sh").read_text()
    for package in ("docker-compose", "shellcheck", "systemd"):
        assert re.search(rf"packages=\(.*\b{package}\b", script), package


# --- a real run of the installer, in a private mount namespace ----------------------------------

NAMESPACE_RUN = r"""
set -euo pipefail
work="$1"
cp -a /etc "${work}/etc"
mount --bind "${work}/etc" /etc        # users, /etc/imaging-hub and the unit land in the copy
mount -t tmpfs tmpfs /opt
mount -t tmpfs tmpfs /var/lib
mkdir -p /opt/imaging-hub/venv/bin
install -m 0755 "${work}/python" /opt/imaging-hub/venv/bin/python
export PATH="${work}/stubs:${PATH}"
step=0
snapshot() {
  step=$((step + 1))
  out="${work}/after-${step}"
  mkdir -p "${out}"
  cp /etc/imaging-hub/gateway.toml "${out}/gateway.toml"
  stat -c '%a %U %G' /etc/imaging-hub /etc/imaging-hub/gateway.toml /var/lib/imaging-hub \
    /var/lib/imaging-hub/spool >"${out}/modes"
  getent passwd imaging-hub >"${out}/passwd"
  cp /etc/systemd/system/imaging-hub-gateway.service "${out}/unit"
  cp /etc/systemd/journald.conf.d/imaging-hub.conf "${out}/journald"
}
cd "${work}"
bash "${INSTALL}" --clinic clinic-a --hub-url https://hub.example.org \
  --token-file "${work}/token-1" >"${work}/run-1.log" 2>&1
snapshot
bash "${INSTALL}" --token-file "${work}/token-2" >"${work}/run-2.log" 2>&1
snapshot
bash "${INSTALL}" --no-start >"${work}/run-3.log" 2>&1
snapshot
"""

PYTHON_STUB = """#!/bin/sh
# stands in for the virtualenv's python: records pip's arguments, "installs" the project
echo "$*" >>"{work}/pip.log"
case "$*" in
  *--no-deps*) printf '#!/bin/sh\\nexit 0\\n' >/opt/imaging-hub/venv/bin/imaging-hub
               chmod 0755 /opt/imaging-hub/venv/bin/imaging-hub ;;
esac
"""


def test_install_script_installs_and_is_idempotent(tmp_path: Path) -> None:
    """install.sh for real (root, as CI runs), with /etc, /opt and /var/lib private to the run:
    a first install, a token rotation, a plain re-run. pip and systemctl are stand-ins."""
    assert os.geteuid() == 0, "this test runs the installer as root, as CI does"
    work = tmp_path
    stubs = work / "stubs"
    stubs.mkdir()
    (stubs / "systemctl").write_text(f'#!/bin/sh\necho "$*" >>"{work}/systemctl.log"\n')
    (stubs / "systemctl").chmod(0o755)
    (work / "python").write_text(PYTHON_STUB.replace("{work}", str(work)))
    tokens = ["gw_" + secrets.token_urlsafe(32) for _ in range(2)]
    for index, token in enumerate(tokens, start=1):
        (work / f"token-{index}").write_text(token + "\n")
    script = work / "namespace.sh"
    script.write_text(NAMESPACE_RUN)
    result = subprocess.run(
        [tool("unshare"), "--mount", "--propagation", "private", "bash", str(script), str(work)],
        env={**os.environ, "INSTALL": str(INSTALL)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    logs = "".join(
        (work / f"run-{i}.log").read_text() for i in (1, 2, 3) if (work / f"run-{i}.log").exists()
    )
    assert result.returncode == 0, result.stderr + logs
    for token in tokens:
        assert token not in logs + result.stdout + result.stderr  # never printed

    first, second, third = (work / f"after-{i}" for i in (1, 2, 3))
    config = (first / "gateway.toml").read_text()
    assert 'clinic = "clinic-a"' in config
    assert 'ae_title = "CLINIC_A"' in config
    assert 'hub_url = "https://hub.example.org"' in config
    assert f'hub_token = "{tokens[0]}"' in config
    assert 'spool_dir = "/var/lib/imaging-hub/spool"' in config
    expected_modes = [
        "750 root imaging-hub",
        "640 root imaging-hub",
        "750 imaging-hub imaging-hub",
        "750 imaging-hub imaging-hub",
    ]
    assert (first / "modes").read_text().splitlines() == expected_modes
    passwd = (first / "passwd").read_text().strip().split(":")
    assert passwd[0] == "imaging-hub"
    assert passwd[5:] == ["/var/lib/imaging-hub", "/usr/sbin/nologin"]
    assert (first / "unit").read_text() == UNIT.read_text()
    assert (first / "journald").read_text() == (GATEWAY / "journald-imaging-hub.conf").read_text()

    # the gateway reads it as written: every value, and no setting left to its default by a typo
    gateway_env = {k: v for k, v in os.environ.items() if k.startswith("IMAGING_HUB_")}
    settings_file = first / "gateway.toml"
    with pytest.MonkeyPatch.context() as patch:
        for key in gateway_env:
            patch.delenv(key)
        patch.setenv(CONFIG_ENV, str(settings_file))
        settings = GatewaySettings()
    assert (settings.clinic, settings.ae_title, settings.dicom_port) == (
        "clinic-a",
        "CLINIC_A",
        11112,
    )
    assert settings.hub_url == "https://hub.example.org"
    assert settings.hub_token.get_secret_value() == tokens[0]
    assert settings.spool_dir == Path("/var/lib/imaging-hub/spool")
    assert (settings.retention_hours, settings.metrics_port) == (168, 9102)
    written = tomllib.loads(config)["gateway"]
    assert set(written) <= set(GatewaySettings.model_fields), "a key the gateway ignores"

    # the rotation replaced only the token line
    rotated = (second / "gateway.toml").read_text()
    assert rotated == config.replace(tokens[0], tokens[1])
    assert (second / "modes").read_text().splitlines() == expected_modes
    assert "replaced the hub token" in (work / "run-2.log").read_text()

    # a plain re-run changes nothing, and the user was created once
    assert (third / "gateway.toml").read_text() == rotated
    assert (third / "modes").read_text().splitlines() == expected_modes
    assert (third / "passwd").read_text() == (first / "passwd").read_text()

    pip = (work / "pip.log").read_text().splitlines()
    assert len(pip) == 9  # three runs x (lock, build tools, the project)
    assert all("--require-hashes" in line for line in pip if "lock.txt" in line)
    assert sum("--no-deps --no-build-isolation" in line for line in pip) == 3
    calls = (work / "systemctl.log").read_text().splitlines()
    assert calls.count("enable imaging-hub-gateway.service") == 3
    assert calls.count("restart imaging-hub-gateway.service") == 2  # not with --no-start
    assert calls.count("daemon-reload") == 3
