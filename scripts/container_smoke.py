#!/usr/bin/env python3
"""Container smoke test: the deployment files, really run against a Docker engine.

    make container-test                 # or: python3 scripts/container_smoke.py

Needs a Docker engine with compose v2 and the shared photos (DRFACE_DATA_ROOT, default ../shared/data:
faces94 for the training run and the API calls). Extra compose files (a build-args override, e.g. a local
package index) come from DRFACE_COMPOSE_OVERRIDE, several separated by ':'; DRFACE_SMOKE_CA_CERT=FILE.pem
builds with that certificate as the EXTRA_CA_CERT build arg. Standard library only: runs without the venv.

Steps, each timed:
  1. `docker compose config` for every profile and override (and the api port published on 127.0.0.1 only)
  2. build the image; only the headless OpenCV, the default recipe installed, uid 10001
  3. `compose up api` into a runs folder that does not exist yet, wait for `healthy`; /readyz, a real
     /v1/embed and /v1/verify, the non-root uid, the read-only root, the no-API-key warning in the log
  4. the `train` profile, 1 short epoch on 6 faces94 identities, into that (now root-owned) runs folder: first
     without the runs-owner one-shot (refused with a sentence, exit 2), then as documented
  5. the api restarted on the new artifact by the documented path; /v1/model shows it, /v1/embed works
The compose project is `drface-smoke`; everything it started is taken down at the end, also on failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "drface-smoke"
IMAGE = "drface:latest"
IMAGE_UID = "10001"
# The documented artifact path (docker-compose.yml, docs/deployment.md): <out>/<config name>.safetensors.
ARTIFACT_IN_CONTAINER = "/runs/default/drface-default.safetensors"
TRAIN_IDENTITIES = 6
TRAIN_COMMAND = [
    "drface", "train", "--data", "/data", "--out", "/runs/default",
    "--epochs", "1", "--batch-size", "16", "--no-cfp", "--threads", "2",
    "--set", "data.holdout_identities=2", "--set", "data.holdout_pairs=10", "--set", "runtime.progress=false",
]  # fmt: skip
HEALTHY_WITHIN_S = 300
READY_WITHIN_S = 120


class SmokeFailure(RuntimeError):
    """A check that did not hold; the message says which and what was seen."""


def log(message: str) -> None:
    print(f"[smoke] {message}", file=sys.stderr, flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


class Compose:
    """`docker compose` with the project name, the compose files and the environment of this smoke run."""

    def __init__(self, overrides: Sequence[Path], environment: dict[str, str]) -> None:
        self.overrides = list(overrides)
        self.environment = environment

    def files(self, gpu: bool = False) -> list[str]:
        names = [REPO_ROOT / "docker-compose.yml"]
        if gpu:
            names.append(REPO_ROOT / "docker-compose.gpu.yml")
        return [arg for name in [*names, *self.overrides] for arg in ("-f", str(name))]

    def attempt(
        self, *args: str, gpu: bool = False, show: bool = False, env: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """(exit status, output) of `docker compose ... args`; with `show`, also streamed to stderr."""
        command = ["docker", "compose", "-p", PROJECT, *self.files(gpu), *args]
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**self.environment, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in process.stdout or ():
            lines.append(line)
            if show:
                sys.stderr.write(line)
        return process.wait(), "".join(lines)

    def run(
        self, *args: str, gpu: bool = False, show: bool = False, env: dict[str, str] | None = None
    ) -> str:
        """The output of `docker compose ... args`; SmokeFailure when it fails."""
        status, output = self.attempt(*args, gpu=gpu, show=show, env=env)
        if status != 0:
            raise SmokeFailure(f"`docker compose {' '.join(args)}` exited {status}\n{output[-4000:]}")
        return output


def docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SmokeFailure(f"`docker {' '.join(args)}` exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of a GET, or of a POST of `body` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    log(f"{name} ...")
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start
        log(f"{name}: {timings[name]:.0f} s")


def check_configs(compose: Compose) -> None:
    """Every profile with and without the GPU override renders; the api is published on loopback only."""
    for gpu in (False, True):
        for profiles in ([], ["--profile", "train"]):
            compose.run(*profiles, "config", "--quiet", gpu=gpu)
    rendered = json.loads(compose.run("--profile", "train", "config", "--format", "json"))
    ports = rendered["services"]["api"]["ports"]
    check(
        all(port.get("host_ip") == "127.0.0.1" for port in ports), f"api published beyond loopback: {ports}"
    )
    gpu_train = json.loads(compose.run("--profile", "train", "config", "--format", "json", gpu=True))
    devices = gpu_train["services"]["train"]["deploy"]["resources"]["reservations"]["devices"]
    check(devices[0]["driver"] == "nvidia", f"GPU override reserves no NVIDIA device: {devices}")


def check_image() -> int:
    """Only headless OpenCV, the default recipe installed, the non-root user; returns the image's bytes."""
    probe = (
        "import importlib.metadata as m, os; from training.config import DEFAULT_CONFIG_PATH as p; "
        "names = {d.metadata['Name'].lower() for d in m.distributions()}; "
        "print(os.getuid(), 'opencv-python' in names, 'opencv-python-headless' in names, p, p.is_file())"
    )
    uid, gui, headless, recipe, recipe_found = docker("run", "--rm", IMAGE, "python", "-c", probe).split()
    check(uid == IMAGE_UID, f"image runs as uid {uid}, expected {IMAGE_UID}")
    check(gui == "False" and headless == "True", f"OpenCV builds: GUI {gui}, headless {headless}")
    check(recipe_found == "True" and "site-packages" in recipe, f"default recipe not installed: {recipe}")
    return int(docker("image", "inspect", IMAGE, "--format", "{{.Size}}"))


def api_container(compose: Compose) -> str:
    container = compose.run("ps", "--quiet", "api").strip()
    check(bool(container), "no api container")
    return container


def wait_healthy(compose: Compose) -> None:
    container = api_container(compose)
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container))
        if state.get("Health", {}).get("Status") == "healthy":
            return
        if state.get("Restarting") or state["Status"] == "exited":
            break
        time.sleep(2)
    logs = compose.run("logs", "--tail", "40", "api")
    raise SmokeFailure(f"api not healthy within {HEALTHY_WITHIN_S} s (state {state['Status']}):\n{logs}")


def check_api(base_url: str, photos: dict[str, Path], ranks_people: bool) -> dict[str, Any]:
    """/readyz, /v1/embed and /v1/verify on real photos; returns /v1/model.

    With `ranks_people`, the same person must score above two different people (the shipped model; the
    1-epoch smoke model has learnt nothing yet, so only the shape of its answers is checked).
    """
    deadline = time.monotonic() + READY_WITHIN_S  # healthy: the process is up; ready: model loaded, warm
    while True:
        status, ready = http_json(f"{base_url}/readyz")
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    check(status == 200 and ready.get("status") == "ready", f"/readyz: {status} {ready}")
    status, embedded = http_json(f"{base_url}/v1/embed", {"image": b64(photos["a1"])})
    check(status == 200 and len(embedded["faces"]) >= 1, f"/v1/embed: {status} {embedded}")
    embedding = embedded["faces"][0]["embedding"]
    norm = sum(value * value for value in embedding) ** 0.5
    check(
        len(embedding) > 0 and abs(norm - 1) < 1e-3,
        f"/v1/embed: embedding of length {len(embedding)}, norm {norm}",
    )
    similarity = {}
    for pair, second in (("same person", "a2"), ("different people", "b1")):
        status, verified = http_json(
            f"{base_url}/v1/verify", {"image1": b64(photos["a1"]), "image2": b64(photos[second])}
        )
        check(
            status == 200 and -1 <= verified["similarity"] <= 1, f"/v1/verify ({pair}): {status} {verified}"
        )
        similarity[pair] = verified["similarity"]
    log(f"/v1/verify similarity: {similarity}")
    check(
        not ranks_people or similarity["same person"] > similarity["different people"],
        f"/v1/verify ranks wrongly: {similarity}",
    )
    status, model = http_json(f"{base_url}/v1/model")
    check(status == 200, f"/v1/model: {status} {model}")
    return model


def check_hardening(compose: Compose) -> None:
    """Non-root uid, read-only root (a write to /opt fails, /tmp works), the warning about the open API."""
    container = api_container(compose)
    uid = compose.run("exec", "-T", "api", "id", "-u").strip()
    check(uid == IMAGE_UID, f"api runs as uid {uid}")
    check(
        docker("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container) == "true",
        "root is writable",
    )
    probe = "touch /opt/venv/x 2>/dev/null && echo writable || echo read-only; touch /tmp/x && echo tmp-ok"
    check(
        compose.run("exec", "-T", "api", "sh", "-c", probe).split() == ["read-only", "tmp-ok"],
        "read-only root",
    )
    logs = compose.run("logs", "api")
    check("API keys are off" in logs, "no start-up warning about the API without keys on 0.0.0.0")


def check_unwritable_runs_refused(compose: Compose, runs: Path) -> None:
    """Without the runs-owner one-shot, training into the root-owned folder stops with a sentence, exit 2."""
    if runs.stat().st_uid != 0:
        log(f"runs folder owned by uid {runs.stat().st_uid}, not root: refusal not checked")
        return
    status, output = compose.attempt(
        "--profile", "train", "run", "--rm", "--no-deps", "train", *TRAIN_COMMAND
    )
    check(status == 2, f"train into a root-owned runs folder exited {status}, expected 2:\n{output[-2000:]}")
    check("cannot write /runs/default" in output and "Traceback" not in output, f"unclear refusal:\n{output}")
    log(f"refused: {output.strip().splitlines()[-1]}")


def smoke_photos(data_root: Path, work: Path) -> tuple[Path, dict[str, Path]]:
    """A small training folder (TRAIN_IDENTITIES faces94 people, copied) and three photos for the API."""
    faces94 = data_root / "faces94"
    check(faces94.is_dir(), f"shared photos not found: {faces94} (set DRFACE_DATA_ROOT)")
    people = sorted(p for p in faces94.iterdir() if p.is_dir())[: TRAIN_IDENTITIES + 1]
    check(len(people) == TRAIN_IDENTITIES + 1, f"{faces94} has fewer than {TRAIN_IDENTITIES + 1} people")
    train_dir = work / "data"
    for person in people[:TRAIN_IDENTITIES]:
        shutil.copytree(person, train_dir / person.name)
    first = sorted(people[-1].glob("*.jpg"))  # a person the smoke training never sees
    other = sorted(people[0].glob("*.jpg"))
    return train_dir, {"a1": first[0], "a2": first[1], "b1": other[0]}


def release_runs(compose: Compose, runs: Path) -> None:
    """Give the runs folder back to this user (training wrote it as uid 10001), so it can be removed."""
    if runs.exists():
        owner = f"{os.getuid()}:{os.getgid()}"
        compose.run(
            "--profile", "train", "run", "--rm", "--no-deps", "runs-owner", "chown", "-R", owner, "/runs"
        )


def main() -> int:
    data_root = Path(os.environ.get("DRFACE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")).resolve()
    overrides = [Path(p) for p in os.environ.get("DRFACE_COMPOSE_OVERRIDE", "").split(":") if p]
    ca_cert = os.environ.get("DRFACE_SMOKE_CA_CERT")  # a PEM file for the EXTRA_CA_CERT build arg
    build_args = ["--build-arg", f"EXTRA_CA_CERT={Path(ca_cert).read_text()}"] if ca_cert else []
    work = Path(tempfile.mkdtemp(prefix="drface-smoke-"))
    runs = work / "runs"  # does not exist: Docker creates it, owned by root, like ./runs on a fresh checkout
    port = free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DRFACE_") or key in {"DRFACE_TORCH_INDEX_URL"}
    }
    environment.update(DRFACE_RUNS_DIR=str(runs), DRFACE_PUBLISH_PORT=str(port))
    compose = Compose(overrides, environment)
    base_url = f"http://127.0.0.1:{port}"
    timings: dict[str, float] = {}
    total_start = time.monotonic()
    try:
        docker("info", "--format", "{{.ServerVersion}}")
        train_dir, photos = smoke_photos(data_root, work)
        compose.environment["DRFACE_DATA_DIR"] = str(train_dir)
        with timed("compose config (4 combinations)", timings):
            check_configs(compose)
        with timed("build", timings):
            compose.run("build", *build_args, "api", show=True)
            size = check_image()
        log(f"image {IMAGE}: {size / 1e9:.2f} GB ({size} bytes)")
        with timed("api up -> healthy", timings):
            compose.run("up", "--detach", "api")
            wait_healthy(compose)
        with timed("api ready + checks", timings):
            shipped = check_api(base_url, photos, ranks_people=True)
            check_hardening(compose)
        check(runs.is_dir(), f"compose up did not create the runs folder {runs}")
        log(
            f"runs folder made by Docker, owned by uid {runs.stat().st_uid}; training runs as uid {IMAGE_UID}"
        )
        with timed("train refused without runs-owner", timings):
            check_unwritable_runs_refused(compose, runs)
        with timed("train (1 epoch, 6 identities)", timings):
            compose.run("--profile", "train", "run", "--rm", "train", *TRAIN_COMMAND, show=True)
        artifact = runs / "default" / Path(ARTIFACT_IN_CONTAINER).name
        check(artifact.is_file(), f"training wrote no {artifact}: {sorted(map(str, runs.rglob('*')))[:20]}")
        card = json.loads(artifact.with_suffix(".json").read_text())
        with timed("api restart on the artifact -> healthy", timings):
            compose.run("up", "--detach", "api", env={"DRFACE_WEIGHTS": ARTIFACT_IN_CONTAINER})
            wait_healthy(compose)
        with timed("api ready + checks (trained artifact)", timings):
            served = check_api(base_url, photos, ranks_people=False)
        check(
            served["version"] == card["version"], f"api serves {served['version']}, trained {card['version']}"
        )
        check(served["version"] != shipped["version"], "api still serves the shipped model")
    except SmokeFailure as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        with timed("down", timings):
            try:
                release_runs(compose, runs)
            finally:
                compose.run("--profile", "train", "down", "--remove-orphans")
                shutil.rmtree(work, ignore_errors=True)
    timings["total"] = time.monotonic() - total_start
    log("PASSED")
    for name, seconds in timings.items():
        print(f"{name:45s} {seconds:6.0f} s")
    print(f"{'image size':45s} {size / 1e9:6.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
