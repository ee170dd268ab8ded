"""`drface pack DIR OUT.rec`: a folder per identity of aligned faces -> an insightface RecordIO set.

Writes `OUT.rec`, `OUT.idx` and `property` beside them (`training/recordio.py`), the format `drface train
--data OUT.rec` and insightface-style trainers read. Images are stored as their files' bytes (no re-encoding),
identities in name order with labels 0..K-1, images in file-name order. Raw photos must be aligned first
(`drface prepare DIR ALIGNED`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.data import DatasetError, looks_aligned, scan_identities
from training.recordio import RecordIOError, write_recordio

EXIT_USAGE = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="folder per identity of aligned 112x112 faces")
    parser.add_argument("out", type=Path, help="RecordIO file to write, e.g. data/train.rec (.idx beside it)")


def pack_folder(src: Path, out: Path) -> tuple[int, int]:
    """Pack `src` into `out` (.rec + .idx + property); returns (identities, images)."""
    if Path(out).suffix != ".rec":
        raise DatasetError(f"output must end in .rec, got {out}")
    identities = scan_identities(src)
    files = [f for identity in identities for f in identity.files]
    if not looks_aligned(files):
        raise DatasetError(
            f"{src} holds photos that are not 112x112 aligned faces: run `drface prepare {src} ALIGNED` "
            "first and pack ALIGNED"
        )
    return write_recordio(out, [[Path(f) for f in identity.files] for identity in identities])


def run(args: argparse.Namespace) -> int:
    """`drface pack`: 0 when written, 2 for unusable input."""
    try:
        identities, images = pack_folder(args.src, args.out)
    except (DatasetError, RecordIOError, OSError) as exc:
        print(f"drface pack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"drface pack: {identities} identities, {images} images -> {args.out}", file=sys.stderr)
    return 0
