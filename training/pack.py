"""`drface pack DIR OUT.rec|OUT.bin`: a folder per identity of aligned faces -> a training or a test set.

`OUT.rec` writes an insightface RecordIO set, `OUT.rec` + `OUT.idx` + `property` (`training/recordio.py`),
the format `drface train --data OUT.rec` and insightface-style trainers read: identities in name order with
labels 0..K-1, images in file-name order. `OUT.bin` writes a verification set like lfw.bin
(`training/binsets.py`) of `--pairs` pairs, half genuine, genuine and impostor pairs alternating so each of
the 10 consecutive folds is balanced: for a test set from people kept out of training. Images are stored as
their files' bytes (no re-encoding). Raw photos must be aligned first (`drface prepare DIR ALIGNED`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.binsets import BinSetError, write_bin
from training.data import (
    DatasetError,
    FaceRef,
    Identity,
    RecordRef,
    build_pairs,
    is_record_file,
    looks_aligned,
    scan_identities,
)
from training.recordio import RecordIOError, write_recordio

EXIT_USAGE = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="folder per identity of aligned 112x112 faces")
    parser.add_argument(
        "out", type=Path, help="data/train.rec (RecordIO, .idx beside it) or data/mine.bin (verification set)"
    )
    parser.add_argument("--pairs", type=int, default=6000, help=".bin only: number of pairs (half genuine)")
    parser.add_argument("--seed", type=int, default=0, help=".bin only: seed of the pair draw")


def interleave(pairs: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor pairs alternating (the longer kind's rest at the end): (P, 2), (P,)."""
    order = [i for pair in zip(np.flatnonzero(same), np.flatnonzero(~same), strict=False) for i in pair]
    used = set(order)
    order += [i for i in range(len(same)) if i not in used]
    return pairs[order], same[order]


def pack_bin(src: Path, out: Path, num_pairs: int, seed: int) -> tuple[int, int]:
    """Write a .bin of `num_pairs` pairs drawn from the identities of `src` (a folder or a .rec);
    returns (identities, pairs)."""
    identities = _aligned_identities(src)
    files = [f for identity in identities for f in identity.files]
    labels = np.array([k for k, identity in enumerate(identities) for _ in identity.files], np.int64)
    pairs, same = interleave(*build_pairs(labels, num_pairs, seed))
    if not same.any() or same.all():
        raise DatasetError(f"{src}: need identities with 2+ images and at least 2 identities for pairs")
    images = [_encoded(files[i]) for pair in pairs for i in pair]
    write_bin(out, images, same.tolist())
    return len(identities), len(same)


def _encoded(ref: FaceRef) -> bytes:
    return ref.file.read(ref.key).image if isinstance(ref, RecordRef) else Path(ref).read_bytes()


def _aligned_identities(src: Path) -> list[Identity]:
    identities = scan_identities(src)
    files = [f for identity in identities for f in identity.files]
    if not is_record_file(src) and not looks_aligned(files):
        raise DatasetError(
            f"{src} holds photos that are not 112x112 aligned faces: run `drface prepare {src} ALIGNED` "
            "first and pack ALIGNED"
        )
    return identities


def pack_folder(src: Path, out: Path) -> tuple[int, int]:
    """Pack `src` into `out` (.rec + .idx + property); returns (identities, images)."""
    if Path(out).suffix != ".rec":
        raise DatasetError(f"output must end in .rec or .bin, got {out}")
    if is_record_file(src):
        raise DatasetError(f"{src} is already a .rec")
    identities = _aligned_identities(src)
    return write_recordio(out, [[Path(f) for f in identity.files] for identity in identities])


def run(args: argparse.Namespace) -> int:
    """`drface pack`: 0 when written, 2 for unusable input."""
    try:
        if args.out.suffix == ".bin":
            identities, pairs = pack_bin(args.src, args.out, args.pairs, args.seed)
            print(f"drface pack: {pairs} pairs of {identities} identities -> {args.out}", file=sys.stderr)
            return 0
        identities, images = pack_folder(args.src, args.out)
    except (DatasetError, RecordIOError, BinSetError, OSError) as exc:
        print(f"drface pack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"drface pack: {identities} identities, {images} images -> {args.out}", file=sys.stderr)
    return 0
