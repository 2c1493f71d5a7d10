"""docker/compose.yml is valid for docker-compose and demands its secrets from the environment.

No Docker engine runs here, so images are not built; Debian's docker-compose validates the file.
"""

import os
import secrets
import shutil
import subprocess
from pathlib import Path

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yml"


def _compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    assert tool is not None, "docker-compose is not installed (apt-get install docker-compose)"
    return subprocess.run(
        [tool, "-f", str(COMPOSE), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid_with_secrets_from_the_environment() -> None:
    values = {
        "POSTGRES_PASSWORD": secrets.token_hex(8),
        "MINIO_ROOT_USER": "hub",
        "MINIO_ROOT_PASSWORD": secrets.token_hex(8),
        "GATEWAY_TOKEN": secrets.token_hex(8),
    }
    result = _compose({"PATH": os.environ["PATH"], **values})
    assert result.returncode == 0, result.stderr
    assert values["POSTGRES_PASSWORD"] in result.stdout  # interpolated, not hard-coded
    for service in ("db:", "minio:", "hub:", "gateway-clinic-a:"):
        assert service in result.stdout


def test_compose_file_refuses_to_run_without_secrets() -> None:
    result = _compose({"PATH": os.environ["PATH"]})
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
