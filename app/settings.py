"""Service settings: one pydantic-settings class, every field read from a `DRFACE_*` environment variable."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.thresholds import ThresholdChoice
from model.artifact import DEFAULT_OPERATING_POINT
from model.detect import DetectorConfig

MEGABYTE = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be told; each field is read from `DRFACE_<FIELD>` (e.g. `DRFACE_PORT`)."""

    model_config = SettingsConfigDict(env_prefix="DRFACE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Interface `drface serve` binds to; `0.0.0.0` in containers.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port `drface serve` listens on.")
    workers: int = Field(1, ge=1, description="Server processes (`drface serve`); each loads its own model.")
    weights: Path | None = Field(
        None,
        description="Model artifact (`.safetensors`, its `.json` model card beside it); "
        "empty = the shipped default `model/weights/drface-default.safetensors`.",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="Torch/OpenCV threads per process; empty = half the cores this container may use "
        "(CPU affinity and cgroup quota) divided by `workers`, at least 1: the detector, decoding and HTTP "
        "run beside the network (README, 'Threads').",
    )
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="Inferences run at the same time per process (size of the inference thread pool); "
        "empty = the cores per worker divided by the torch threads (2 with the default threads).",
    )
    max_queue: int = Field(
        32,
        ge=0,
        description="Requests that may wait for an inference slot; beyond them: 429 with Retry-After.",
    )
    retry_after_s: int = Field(1, ge=0, description="Seconds sent in the Retry-After header of a 429.")
    max_upload_bytes: int = Field(
        10 * MEGABYTE, ge=1, description="Largest image file accepted, in bytes (413 beyond it)."
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest image accepted, width x height, checked from the header (413)."
    )
    max_faces: int = Field(
        20, ge=1, description="Most faces `/v1/embed` embeds in one image (400 `too_many_faces` beyond it)."
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest request line plus headers, in bytes (431 beyond it).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection may take to send a request's line and headers, counted from the "
        "connection's start or the end of its previous response (408, then the connection is closed).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds a request may take to send its whole body once its headers are in (408).",
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open HTTP connections per process; a connection beyond them gets 429 and is closed.",
    )
    max_buffered_bytes: int = Field(
        128 * MEGABYTE,
        ge=1,
        description="Request body bytes that in-flight requests may hold at once, per process (429 beyond "
        "it); at least one largest `/v1/verify` request.",
    )
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated API keys; when set, every `/v1` route needs one in `X-API-Key`.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and of uvicorn."
    )
    threshold: ThresholdChoice = Field(
        DEFAULT_OPERATING_POINT,
        description="Default threshold of `/v1/verify`: an operating point of the model card (`far_1e-2`, "
        "`far_1e-3`, `far_1e-4`, `best_accuracy`) or a cosine similarity in [-1, 1].",
    )
    flip: bool = Field(
        True,
        description="Embed each face and its mirror image and sum them (test-time flip), as the card's "
        "thresholds were calibrated: +0.28 points CFP-FF, +1.21 CFP-FP for 1.6x the network time "
        "(benchmarks/bench_flip.py); false = one pass, faster, thresholds slightly off.",
    )
    detect_side: int | None = Field(
        None,
        ge=64,
        le=4096,
        description="Bring every photo's longer side to this many pixels for face detection; empty = "
        "photos between 256 and 640 px as they are, smaller ones padded and scaled up to 256, larger ones "
        "down to 640. 192 took 3.05x less detector CPU on CFP's 7,000 photos with the same CFP accuracy "
        "(3 photos without a face instead of 0), but shrinks small faces in large photos "
        "(benchmarks/bench_detect_scale.py).",
    )
    micro_batch: Literal["off", "idle", "always"] = Field(
        "idle",
        description="Who runs the network through the micro-batcher's (cores / torch threads) worker threads "
        "(app/batcher.py): `idle` = a request alone in the server, whose face and mirror then run on two "
        "cores at once (when there are 2 or more worker threads); `always` = every request, concurrent "
        "requests' images batched together; `off` = each request runs its own network batch on its "
        "inference thread (README, 'Micro-batching').",
    )
    batch_max_images: int = Field(
        8,
        ge=1,
        le=64,
        description="Most images in one micro-batch (a face and its mirror are 2); past ~8 the activations "
        "leave the cache and a batch gets slower per face (benchmarks/bench_network_batch.py).",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="How long a free network worker waits for more images before running a micro-batch "
        "that is not full; 0 = run what is queued at once.",
    )
    trace_network: bool = Field(
        True,
        description="Run embeddings through a TorchScript trace of the network (batch norm folded), checked "
        "against eager PyTorch at start-up; false = eager PyTorch.",
    )
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="What runs the network: `torch` (the TorchScript trace, or eager PyTorch with "
        "`trace_network=false`) or `onnxruntime` (`onnx_model`); same API, region maps included.",
    )
    onnx_model: Path | None = Field(
        None,
        description="For `backend=onnxruntime`: a `drface export --region-maps` file of the same `weights`; "
        "empty = export the weights at start-up (checked, a few seconds).",
    )
    state_dir: Path = Field(
        Path("state"),
        description="Folder of the service's own data: the default SQLite gallery `gallery.sqlite3`.",
    )
    gallery_url: str = Field(
        "",
        description="Gallery database: empty = SQLite `gallery.sqlite3` in `state_dir`; `sqlite:///path` "
        "(`sqlite:////abs/path`) or `postgresql://user:password@host:5432/dbname` (several replicas).",
    )
    gallery_keep_photos: bool = Field(
        False,
        description="Also store each enrolment photo, so `drface gallery reembed` can recompute templates "
        "when the model changes; false = only embeddings and the photo's SHA-256 are stored.",
    )
    warmup_runs: int = Field(
        2, ge=1, description="Full-pipeline inferences run at start-up before `/readyz` turns ready."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("weights", "torch_threads", "max_concurrent", "onnx_model", "detect_side", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("threshold", mode="before")
    @classmethod
    def _empty_threshold_is_default(cls, value: object) -> object:
        return DEFAULT_OPERATING_POINT if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _buffer_fits_one_request(self) -> Settings:
        largest = self.max_request_bytes(2)
        if self.max_buffered_bytes < largest:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must hold at least one largest request "
                f"({largest} bytes: two images of max_upload_bytes, base64-encoded)"
            )
        return self

    def max_request_bytes(self, images: int = 1) -> int:
        """Largest request body for `images` images: each base64-encoded (4/3), plus room for the fields."""
        return images * math.ceil(self.max_upload_bytes * 4 / 3) + 64 * 1024

    def concurrent_inferences(self) -> int:
        """`max_concurrent`, else the cores per worker / torch threads (at least 1). On 2 cores two 1-thread
        inferences at once served 2.57x the requests/s of one 2-thread inference at concurrency 8, with the
        same p50 at concurrency 1 (benchmarks/bench_servers.py, README "Threads")."""
        if self.max_concurrent is not None:
            return self.max_concurrent
        return self.network_workers()

    def network_workers(self) -> int:
        """Threads of the micro-batcher (`micro_batch`): the cores per worker / torch threads (at least 1)."""
        return max(1, available_cores() // self.workers // self.thread_count())

    def detector_config(self) -> DetectorConfig:
        """The face detector as served: `detect_side`, and one onnxruntime thread (a larger intra-op pool
        spin-waits after each run and takes the cores the network needs right after; on face-sized photos
        one thread detects about as fast)."""
        sizes = (
            {} if self.detect_side is None else {"min_side": self.detect_side, "max_side": self.detect_side}
        )
        return DetectorConfig(num_threads=1, **sizes)

    def thread_count(self) -> int:
        """Torch/OpenCV threads per process: `torch_threads`, else half the available cores / workers (at
        least 1). On 2 cores 1 thread served /v1/embed 1.44x faster than 2 (benchmarks/bench_servers.py)."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, available_cores() // 2 // self.workers)


def available_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a cgroup (v2 or v1) CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup quota, or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
