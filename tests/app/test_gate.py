"""The inference gate: bounded admission, 429 beyond it, and no leaked slots."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.engine import InferenceGate
from app.errors import OverloadedError


def test_gate_refuses_beyond_running_plus_waiting_and_frees_slots_afterwards() -> None:
    gate = InferenceGate(concurrency=1, max_queue=1, retry_after_s=3, threads=1)
    release = threading.Event()

    async def scenario() -> None:
        running = asyncio.ensure_future(gate.run(release.wait, 10))
        waiting = asyncio.ensure_future(gate.run(lambda: "second"))
        await asyncio.sleep(0.05)
        assert gate.admitted == 2
        with pytest.raises(OverloadedError) as refused:
            await gate.run(lambda: "third")
        assert refused.value.headers == {"Retry-After": "3"}
        release.set()
        assert await running is True and await waiting == "second"
        assert gate.admitted == 0
        assert await gate.run(lambda: "again") == "again"

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        gate.shutdown()


def test_a_cancelled_request_keeps_its_slot_until_its_thread_is_done() -> None:
    gate = InferenceGate(concurrency=1, max_queue=0, retry_after_s=1, threads=1)
    release = threading.Event()

    async def scenario() -> None:
        task = asyncio.ensure_future(gate.run(release.wait, 10))
        await asyncio.sleep(0.05)
        task.cancel()  # the client went away; the thread is still busy
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await gate.run(lambda: None)
        release.set()
        for _ in range(100):
            if gate.admitted == 0:
                break
            await asyncio.sleep(0.01)
        assert gate.admitted == 0

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        gate.shutdown()


def test_errors_in_the_job_reach_the_caller_and_free_the_slot() -> None:
    gate = InferenceGate(concurrency=1, max_queue=0, retry_after_s=1, threads=1)

    def fail() -> None:
        raise ValueError("bad photo")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="bad photo"):
            await gate.run(fail)
        assert gate.admitted == 0

    asyncio.run(scenario())
    gate.shutdown()
