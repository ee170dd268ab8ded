"""Verification `.bin` sets (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin), read safely.

A `.bin` is a pickle of `(images, is_same)`: a list of 2P encoded images (JPEG/PNG bytes of aligned 112x112
faces; images 2i and 2i+1 are pair i) and a list of P booleans. Unpickling a file from the internet can run
any code, so `load_bin` first walks the pickle's opcodes without executing anything and admits only those that
build bytes, lists, tuples and booleans (and the memo and framing around them); a file with any other opcode,
above all a global lookup (how a pickle calls code), is refused with `BinSetError`. Only then is it unpickled,
by an unpickler that also refuses every global, and the result's shape is checked.

The standard protocol: 10 folds of consecutive pairs (fold k = pairs [kP/10, (k+1)P/10)), the threshold of
each fold chosen on the other nine; embeddings are flip-summed like every evaluation here.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from model.artifact import write_atomic
from model.decode import ImageError
from model.pipeline import CROP_LIMITS, FaceError, read_aligned_crop
from training.metrics import verification_report
from training.photos import embed_aligned_faces
from training.scoring import cosine_scores

BIN_FOLDS = 10

# Opcodes that only build bytes, lists, tuples and booleans, or manage the memo, frames and protocol.
_ALLOWED_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK",
        "EMPTY_LIST", "APPEND", "APPENDS", "LIST",
        "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",  # bytes (Python 3)
        "BINSTRING", "SHORT_BINSTRING", "STRING",  # str of Python 2 = bytes (encoding="bytes")
        "NEWTRUE", "NEWFALSE",
        "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    }
)  # fmt: skip


class BinSetError(ValueError):
    """A .bin file that is missing, unsafe (holds anything but bytes, lists, tuples, bools) or malformed."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Refuses every global (class or function) a pickle asks for: nothing can be called."""

    def find_class(self, module: str, name: str) -> Any:
        raise BinSetError(f"refused: the pickle asks for {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise BinSetError("refused: the pickle uses persistent ids")


def check_opcodes(data: bytes, source: str) -> None:
    """Raise BinSetError unless every opcode of the pickle `data` is in the allowed set (nothing executed)."""
    try:
        for opcode, arg, position in pickletools.genops(data):
            if opcode.name == "INT" and isinstance(arg, bool):
                continue  # protocol 0/1 booleans: I01 / I00
            if opcode.name not in _ALLOWED_OPCODES:
                detail = f" {arg}" if opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST") and arg else ""
                raise BinSetError(
                    f"{source}: refused, not a plain verification set: pickle opcode {opcode.name}{detail} "
                    f"at byte {position} (only bytes, lists, tuples and booleans are admitted)"
                )
    except (ValueError, EOFError) as exc:
        if isinstance(exc, BinSetError):
            raise
        raise BinSetError(f"{source}: not a pickle: {exc}") from None


def read_bin_pickle(path: Path) -> tuple[list[bytes], list[bool]]:
    """(encoded images, is_same flags) of a .bin file, admitted only if safe (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BinSetError(f"cannot read {path}: {exc}") from None
    check_opcodes(data, str(path))
    try:
        loaded = _NoGlobalsUnpickler(io.BytesIO(data), encoding="bytes").load()
    except BinSetError:
        raise
    except Exception as exc:  # a malformed pickle raises many kinds of errors
        raise BinSetError(f"{path}: cannot unpickle: {exc}") from None
    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
        raise BinSetError(f"{path}: expected a pair (images, is_same), got a {type(loaded).__name__}")
    images, same = loaded
    if not (isinstance(images, (list, tuple)) and all(isinstance(i, bytes) for i in images)):
        raise BinSetError(f"{path}: the first item must be a list of encoded images (bytes)")
    if not (isinstance(same, (list, tuple)) and all(isinstance(s, bool) for s in same)):
        raise BinSetError(f"{path}: the second item must be a list of booleans")
    if not same or len(images) != 2 * len(same):
        raise BinSetError(f"{path}: {len(images)} images for {len(same)} pairs (need 2 per pair)")
    return list(images), list(same)


@dataclass(frozen=True)
class BinSet:
    """A verification set: `faces` (2P, 112, 112, 3) uint8 BGR, pair i = faces 2i and 2i+1, `same` (P,)."""

    name: str
    faces: np.ndarray
    same: np.ndarray

    @property
    def pairs(self) -> np.ndarray:
        """(P, 2) int64 image indices."""
        return np.arange(2 * len(self.same), dtype=np.int64).reshape(-1, 2)

    @property
    def folds(self) -> np.ndarray:
        """(P,) fold of each pair: BIN_FOLDS blocks of consecutive pairs, as the insightface protocol."""
        return np.arange(len(self.same)) * BIN_FOLDS // len(self.same)


def _decode(encoded: bytes, index: int, source: str) -> np.ndarray:
    try:
        return read_aligned_crop(encoded, CROP_LIMITS)
    except (ImageError, FaceError) as exc:
        raise BinSetError(f"{source}: image {index} cannot be decoded: {exc}") from None


def load_bin(path: Path) -> BinSet:
    """Read, check and decode a .bin set; its name is the file stem (`lfw`, `cfp_fp`, ...)."""
    path = Path(path)
    images, same = read_bin_pickle(path)
    faces = np.stack([_decode(image, i, str(path)) for i, image in enumerate(images)])
    return BinSet(path.stem, faces, np.asarray(same, dtype=bool))


def score_bin(model: nn.Module, binset: BinSet, batch_size: int = 64) -> np.ndarray:
    """(P,) cosine similarity of each pair's flip-summed embeddings."""
    embeddings = embed_aligned_faces(model, binset.faces, batch_size=batch_size)
    return cosine_scores(embeddings, binset.pairs)


def bin_report(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray, served_threshold: float | None = None
) -> dict[str, float | int]:
    """`metrics.verification_report` of pair `scores` (P,) with `same` (P,) over `folds` (P,), plus
    `undetected` 0 (no detection runs on a .bin: its faces are aligned)."""
    report = dict(verification_report(scores, same, folds, served_threshold))
    report["undetected"] = 0
    return report


def evaluate_bin(
    model: nn.Module, binset: BinSet, batch_size: int = 64, served_threshold: float | None = None
) -> dict[str, float | int]:
    """`bin_report` of `model` on `binset`."""
    scores = score_bin(model, binset, batch_size)
    return bin_report(scores, binset.same, binset.folds, served_threshold)


def write_bin(path: Path, images: list[bytes], same: list[bool]) -> None:
    """Write a .bin set (pickle protocol 4 of (images, is_same)), e.g. to build test sets; atomic."""
    if len(images) != 2 * len(same):
        raise BinSetError(f"{len(images)} images for {len(same)} pairs (need 2 per pair)")
    payload = pickle.dumps((list(images), [bool(s) for s in same]), protocol=4)
    write_atomic(Path(path), lambda temp: temp.write_bytes(payload))
