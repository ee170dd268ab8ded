"""`drface prepare SRC DST`: folder-per-identity raw photos -> aligned 112x112 faces with the same layout.

Every photo goes through the service's own face pipeline (`model.pipeline`: decode, detect, align); the
largest face of each photo is kept, a photo without a face is skipped and reported. Runs in parallel worker
processes with a progress bar, is resumable (an output that exists is not redone; outputs are written to a
temporary name and renamed, so an interrupted run never leaves half a file) and writes a JSON report of every
skipped photo and why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from model.artifact import write_atomic
from model.decode import (
    ImageDecodeError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from model.detect import DetectorConfig, FaceDetector
from model.pipeline import ImageLimits, read_faces

REPORT_NAME = "prepare_report.json"
_PARTIAL_SUFFIX = ".partial"


class PrepareConfig(BaseModel):
    """Options of `drface prepare` (sizes in pixels, limits per photo)."""

    model_config = ConfigDict(extra="forbid")

    src: Path = Field(description="Raw photos: SRC/<identity>/<photo> (deeper folders are kept as they are).")
    dst: Path = Field(description="Aligned output root; same relative layout, extension of `image_format`.")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="Worker processes.")
    image_format: Literal["png", "jpg"] = Field("png", description="png (lossless) or jpg (quality 95).")
    jpeg_quality: int = Field(95, ge=50, le=100)
    max_bytes: int = Field(50_000_000, ge=1, description="Photos larger than this many bytes are skipped.")
    max_pixels: int = Field(80_000_000, ge=1, description="Photos with more pixels than this are skipped.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig)


@dataclass(frozen=True)
class Outcome:
    """What happened to one photo. status: written / skipped; reason for skips: no_face, decode_error, ..."""

    path: str
    status: Literal["written", "skipped"]
    reason: str = ""
    detail: str = ""
    faces: int = 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="folder of raw photos, one sub-folder per identity")
    parser.add_argument("dst", type=Path, help="output folder for aligned 112x112 faces (same layout)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    parser.add_argument(
        "--max-side",
        type=int,
        default=DetectorConfig().max_side,
        help="photos with a longer side above this are downscaled for detection (pixels)",
    )
    parser.add_argument(
        "--min-score", type=float, default=DetectorConfig().score_threshold, help="detector score threshold"
    )
    parser.add_argument("--format", choices=["png", "jpg"], default="png", help="output image format")


def run(args: argparse.Namespace) -> int:
    if not args.src.is_dir():
        print(f"drface prepare: source folder {args.src} does not exist", file=sys.stderr)
        return 2
    options = {"src": args.src, "dst": args.dst, "image_format": args.format}
    if args.workers is not None:
        options["workers"] = args.workers
    options["detector"] = DetectorConfig(max_side=args.max_side, score_threshold=args.min_score)
    outcomes = prepare_dataset(PrepareConfig(**options))
    report = write_report(args.dst, outcomes)
    print(summary_line(outcomes, report))
    return 0


def plan(config: PrepareConfig) -> tuple[list[tuple[Path, Path]], list[Outcome]]:
    """Source -> output path pairs still to do, and the outcomes already known (done, name clashes)."""
    jobs: list[tuple[Path, Path]] = []
    known: list[Outcome] = []
    claimed: dict[Path, Path] = {}
    for source in sorted(p for p in config.src.rglob("*") if p.is_file()):
        relative = source.relative_to(config.src)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders (.DS_Store, .git) are not photos
        output = (config.dst / relative).with_suffix(f".{config.image_format}")
        if output in claimed:
            detail = f"same output name as {claimed[output].relative_to(config.src)}"
            known.append(Outcome(str(relative), "skipped", "name_clash", detail))
            continue
        claimed[output] = source
        if output.exists():
            known.append(Outcome(str(relative), "skipped", "already_done"))
        else:
            jobs.append((source, output))
    return jobs, known


def prepare_dataset(config: PrepareConfig) -> list[Outcome]:
    """Align every photo under config.src into config.dst; returns one `Outcome` per source file."""
    config.dst.mkdir(parents=True, exist_ok=True)
    _remove_partials(config.dst)
    jobs, outcomes = plan(config)
    progress = tqdm(total=len(jobs), desc="prepare", unit="img", disable=None)
    if config.workers == 1 or len(jobs) <= 1:
        _init_worker(config)
        for job in jobs:
            outcomes.append(_process(job))
            progress.update()
    else:
        with ProcessPoolExecutor(config.workers, initializer=_init_worker, initargs=(config,)) as pool:
            for outcome in pool.map(_process, jobs, chunksize=8):
                outcomes.append(outcome)
                progress.update()
    progress.close()
    return sorted(outcomes, key=lambda outcome: outcome.path)


def write_report(dst: Path, outcomes: list[Outcome]) -> Path:
    """Write DST/prepare_report.json: counts, and every photo not written this run with its reason."""
    counts = Counter(o.reason or o.status for o in outcomes)
    report = {
        "total": len(outcomes),
        "counts": dict(sorted(counts.items())),
        "multiple_faces": sum(1 for o in outcomes if o.faces > 1),
        "skipped": [asdict(o) for o in outcomes if o.status == "skipped" and o.reason != "already_done"],
    }
    path = dst / REPORT_NAME
    payload = json.dumps(report, indent=2).encode()
    write_atomic(path, lambda temp: temp.write_bytes(payload), temp_suffix=_PARTIAL_SUFFIX)
    return path


def summary_line(outcomes: list[Outcome], report: Path) -> str:
    counts = Counter(o.reason or o.status for o in outcomes)
    written, done = counts.pop("written", 0), counts.pop("already_done", 0)
    failures = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(counts.items()))
    skipped = sum(counts.values())
    return (
        f"prepare: {len(outcomes)} photos: {written} written, {done} already done, {skipped} skipped"
        + (f" ({failures})" if failures else "")
        + f"; report: {report}"
    )


_REASONS = {
    ImageDecodeError: "decode_error",
    UnsupportedImageError: "unsupported_image",
    ImageTooLargeError: "image_too_large",
}


@dataclass(frozen=True)
class _Worker:
    config: PrepareConfig
    detector: FaceDetector


# One detector per worker process: onnxruntime sessions cannot be pickled, so each process builds its own.
_worker: _Worker | None = None


def _init_worker(config: PrepareConfig) -> None:
    global _worker
    _worker = _Worker(config, FaceDetector(config.detector.model_copy(update={"num_threads": 1})))


def _process(job: tuple[Path, Path]) -> Outcome:
    source, output = job
    assert _worker is not None, "_init_worker was not called in this process"
    config, detector = _worker.config, _worker.detector
    relative = str(source.relative_to(config.src))
    limits = ImageLimits(config.max_bytes, config.max_pixels)
    try:
        faces = read_faces(source.read_bytes(), detector, limits, no_face="empty")
    except ImageError as error:
        return Outcome(relative, "skipped", _REASONS.get(type(error), "image_error"), str(error))
    except OSError as error:
        return Outcome(relative, "skipped", "read_error", str(error))
    if not faces:
        return Outcome(relative, "skipped", "no_face", f"no face scored >= {config.detector.score_threshold}")
    aligned = faces[0].aligned  # "the" face: the largest
    params = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality] if config.image_format == "jpg" else []
    ok, encoded = cv2.imencode(f".{config.image_format}", aligned, params)
    if not ok:
        return Outcome(relative, "skipped", "encode_error", f"could not encode {config.image_format}")
    # Not fsynced: a lost output is redone by the next run, and one fsync per small image costs more than it.
    write_atomic(
        output, lambda temp: temp.write_bytes(encoded.tobytes()), durable=False, temp_suffix=_PARTIAL_SUFFIX
    )
    return Outcome(relative, "written", faces=len(faces))


def _remove_partials(dst: Path) -> None:
    """Delete temporary files an interrupted run left behind."""
    for partial in dst.rglob(f".*{_PARTIAL_SUFFIX}"):
        partial.unlink(missing_ok=True)
