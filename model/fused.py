"""The optional fused CPU operator for 1x1 DRConv inference (``model/csrc/drconv_pointwise.cpp``).

Built once at install (`make install` and the Docker image run ``python -m model.fused``; needs a C++
compiler and ninja) into ``model/_ext/``, next to the installed package. At run time it is used only if that
build exists and matches the source; otherwise, or with ``DRFACE_FUSED=0``, or off CPU/float32,
DRConv2d runs its pure-PyTorch path (same results). Nothing is ever compiled at run time.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "drconv_pointwise.cpp"
BUILD_DIR = Path(__file__).resolve().parent / "_ext"
LIBRARY_NAME = "drface_ops"
_STAMP = BUILD_DIR / "source.sha256"  # hash of the source the library was built from


def _source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def _library_path() -> Path:
    return BUILD_DIR / f"{LIBRARY_NAME}.so"


@functools.cache
def available() -> bool:
    """True when the built operator matches its source and is loaded: ``torch.ops.drface.pointwise_infer``."""
    if os.environ.get("DRFACE_FUSED", "1") == "0":
        return False
    library = _library_path()
    try:
        if not library.is_file() or _STAMP.read_text().strip() != _source_hash():
            return False
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError):
        return False
    return hasattr(torch.ops.drface, "pointwise_infer")


def build(portable: bool = False, verbose: bool = False) -> Path:
    """Compile the operator into BUILD_DIR (about 20 s); returns the library path.

    By default for this CPU (-march=native: built where it runs); ``portable`` for images that run on other
    x86-64 CPUs (compare with ``benchmarks/bench_drconv.py`` after each build: batches gain from native code).
    """
    from torch.utils.cpp_extension import load

    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    load(
        name=LIBRARY_NAME,
        sources=[str(SOURCE)],
        build_directory=str(BUILD_DIR),
        extra_cflags=["-O3", "-fopenmp", *([] if portable else ["-march=native"])],
        # OpenMP for at::parallel_for; libgomp.so.1 resolves to the copy torch has already loaded
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=verbose,
    )
    _STAMP.write_text(_source_hash() + "\n")
    available.cache_clear()
    return _library_path()


def main(argv: list[str] | None = None) -> int:
    """`python -m model.fused [--portable]`: build the operator; exit 0 even without a compiler (the PyTorch
    path works)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--portable", action="store_true", help="code for any x86-64 CPU, not only this one")
    args = parser.parse_args(argv)
    try:
        path = build(portable=args.portable)
    except Exception as exc:  # no compiler, no ninja, ...: DRConv2d falls back to pure PyTorch
        print(f"drface: fused DRConv operator not built ({exc}); using the PyTorch path", file=sys.stderr)
        return 0
    print(f"drface: fused DRConv operator built: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
