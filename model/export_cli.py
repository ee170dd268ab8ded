"""`drface export`: write a trained model as a checked ONNX file (the work is in model/export.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from model.artifact import DEFAULT_WEIGHTS, ArtifactError, artifact_paths, load_artifact
from model.export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    ExportCheckError,
    ExportError,
    describe,
    export_onnx,
    load_aligned_faces,
)


def default_check_faces() -> Path | None:
    """$DRFACE_DATA_ROOT/utkface, else ../shared/data/utkface beside the repository (aligned 112x112)."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("DRFACE_DATA_ROOT") or shared)
    return root / "utkface" if (root / "utkface").is_dir() else None


def _batch(value: str) -> int | None:
    """'dynamic' -> None, a positive int -> itself (argparse type)."""
    if value == "dynamic":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive int, got {value!r}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help="model weights (.safetensors with its .json card; default: the shipped model)",
    )
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default: onnx)")
    parser.add_argument(
        "--out", type=Path, default=None, help="file to write (default: <weights name>.onnx in this folder)"
    )
    parser.add_argument(
        "--opset",
        type=int,
        choices=range(MIN_OPSET, MAX_OPSET + 1),
        metavar=f"{{{MIN_OPSET}..{MAX_OPSET}}}",
        default=DEFAULT_OPSET,
        help=f"ONNX opset (default: {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--batch", type=_batch, default=None, help="'dynamic' (default) or a fixed batch size N"
    )
    parser.add_argument(
        "--region-maps",
        action="store_true",
        help="also output every DRConv layer's guided mask (B, h, w) int64, named region_map.<layer>",
    )
    parser.add_argument(
        "--check-faces",
        type=Path,
        default=None,
        help="folder of 112x112 aligned face images the export is checked on, besides synthetic inputs "
        "(default: $DRFACE_DATA_ROOT/utkface or ../shared/data/utkface when present)",
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"drface export: error: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    """Returns 0 when the file is written, 2 on a user error, 1 when the written graph fails its check."""
    started = time.perf_counter()
    out: Path = args.out or Path(artifact_paths(args.weights)[0].with_suffix(".onnx").name)
    if out.suffix != ".onnx":
        return _fail(f"--out must name an .onnx file, got {out}")
    faces_dir = args.check_faces or default_check_faces()
    try:
        loaded = load_artifact(args.weights)
        faces = load_aligned_faces(faces_dir) if faces_dir is not None else None
    except (ArtifactError, ExportError) as exc:
        return _fail(str(exc))
    if faces is None:
        print(
            "drface export: no aligned faces found (--check-faces DIR); checking on synthetic inputs only",
            file=sys.stderr,
        )
    try:
        check = export_onnx(loaded, out, args.opset, args.batch, args.region_maps, faces)
    except ExportCheckError as exc:
        return _fail(str(exc), code=1)
    except ExportError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc.strerror or exc}")
    except torch.onnx.errors.OnnxExporterError as exc:
        return _fail(f"torch.onnx could not export the network: {exc}", code=1)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB, opset {args.opset}) in {time.perf_counter() - started:.1f} s")
    print(f"outputs: {describe(out)}")
    print(f"check passed: {check.summary()}; onnx.checker passed")
    return 0
