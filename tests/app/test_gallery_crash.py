"""Nothing acknowledged is lost: SIGKILL a real `drface serve` mid-enrolment, restart it, find every face."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
from service_testkit import aligned_crop as crop
from service_testkit import start_server, stop_server

pytestmark = pytest.mark.slow

CLIENTS = 3
ACKNOWLEDGED_BEFORE_KILL = 12


def test_every_acknowledged_enrolment_survives_a_sigkill(tmp_path: Path) -> None:
    env = {"DRFACE_STATE_DIR": str(tmp_path), "DRFACE_TORCH_THREADS": "1", "DRFACE_MAX_CONCURRENT": "2"}
    log_path = tmp_path / "server.log"
    with open(log_path, "ab") as log:
        process, url = start_server(log, **env)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.post("/v1/subjects", json={"id": "crash"}).status_code == 201
            acknowledged: list[str] = []
            lock = threading.Lock()
            enough = threading.Event()

            def enrol_until_killed(client_number: int) -> None:
                with httpx.Client(base_url=url, timeout=30) as client:
                    for attempt in range(10_000):
                        seed = 1000 * client_number + attempt
                        files = {"image": (f"{seed}.png", crop(seed), "image/png")}
                        try:
                            response = client.post(
                                "/v1/subjects/crash/faces", files=files, data={"aligned": "true"}
                            )
                        except httpx.TransportError:
                            return  # the server is gone
                        assert response.status_code == 201, response.text
                        with lock:
                            acknowledged.append(response.json()["face"]["id"])
                            if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
                                enough.set()

            threads = [threading.Thread(target=enrol_until_killed, args=(n,)) for n in range(CLIENTS)]
            for thread in threads:
                thread.start()
            assert enough.wait(timeout=180), "enrolments too slow"
            os.kill(process.pid, signal.SIGKILL)  # while the clients keep enrolling
            process.wait(timeout=30)
            for thread in threads:
                thread.join(timeout=60)
        finally:
            if process.poll() is None:
                stop_server(process)

        restarted, url = start_server(log, **env)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            stored = {face["id"] for face in client.get("/v1/subjects/crash").json()["faces"]}
            assert set(acknowledged) <= stored, f"lost: {set(acknowledged) - stored}"
            identify = client.post(
                "/v1/identify",
                files={"image": ("0.png", crop(0), "image/png")},
                data={"aligned": "true", "top_k": "1"},
            ).json()
            assert identify["searched_templates"] == len(stored)  # the restarted index holds every face
            assert identify["candidates"][0]["subject_id"] == "crash"
    finally:
        stop_server(restarted)
