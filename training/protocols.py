"""Verification protocols: which image pairs to compare, their labels and folds.

- CFP (Celebrities in Frontal-Profile): the official layout, `Protocol/Pair_list_{F,P}.txt` (1-based ids ->
  image paths relative to `Protocol/`) and `Protocol/Split/{FF,FP}/01..10/{same,diff}.txt` ("i,j" per line).
  `load_cfp` returns both splits over ONE shared image list (5,000 frontal + 2,000 profile), so a single
  embedding pass serves both.
- LFW `pairs.txt`: a header "folds pairs_per_fold" (or a single pair count), then "name n1 n2" (same person)
  and "name1 n1 name2 n2" (different people) lines; images at `root/name/name_000n.jpg`.
- CSV `path1,path2,label` (label 1/0, true/false, same/diff; optional header row); paths relative to the
  CSV's folder unless absolute.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import REPO_ROOT

CFP_SPLITS: dict[str, str] = {"cfp_ff": "FF", "cfp_fp": "FP"}
_CFP_ALIASES = {folder: name for name, folder in CFP_SPLITS.items()}
DEFAULT_FOLDS = 10
_CSV_TRUE = {"1", "true", "same", "yes"}
_CSV_FALSE = {"0", "false", "diff", "different", "no"}


class ProtocolError(ValueError):
    """A protocol file is missing, malformed (the message names file and line) or points at missing images."""


DATA_ROOT_ENV = "DRFACE_DATA_ROOT"


def default_cfp_root() -> Path | None:
    """$DRFACE_DATA_ROOT/cfp, else ../shared/data/cfp next to the repository, when it exists."""
    candidates = []
    if os.environ.get(DATA_ROOT_ENV):
        candidates.append(Path(os.environ[DATA_ROOT_ENV]) / "cfp")
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "cfp")
    return next((path for path in candidates if path.is_dir()), None)


@dataclass(frozen=True)
class Protocol:
    """A verification protocol.

    `images` unique image paths (each embedded once); `pairs` (P, 2) int64 indices into `images`;
    `labels` (P,) bool, True for the same identity; `folds` (P,) int64 fold id of each pair.
    """

    name: str
    images: list[Path]
    pairs: np.ndarray
    labels: np.ndarray
    folds: np.ndarray

    def __post_init__(self) -> None:
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ProtocolError(f"{self.name}: pairs must have shape (P, 2), got {self.pairs.shape}")
        if not (len(self.labels) == len(self.folds) == len(self.pairs)):
            raise ProtocolError(f"{self.name}: pairs, labels and folds differ in length")
        if self.pairs.size and (self.pairs.min() < 0 or self.pairs.max() >= len(self.images)):
            raise ProtocolError(f"{self.name}: a pair indexes past the {len(self.images)} images")

    @property
    def num_folds(self) -> int:
        return int(np.unique(self.folds).size)

    def subset(self, folds: int | None = None, max_pairs: int | None = None) -> Protocol:
        """A smaller protocol for quick runs: the first `folds` folds, then at most `max_pairs` pairs in all.

        Pairs are spread evenly over the kept folds and, within a fold, half same / half different (in file
        order). Only the images the kept pairs use remain in `images`.
        """
        keep = np.ones(len(self.pairs), dtype=bool)
        fold_ids = np.unique(self.folds)
        if folds is not None:
            if folds < 1:
                raise ProtocolError("folds must be at least 1")
            fold_ids = fold_ids[:folds]
            keep &= np.isin(self.folds, fold_ids)
        if max_pairs is not None:
            if max_pairs < 1:
                raise ProtocolError("max_pairs must be at least 1")
            limited = np.zeros_like(keep)
            per_fold = np.full(fold_ids.size, max_pairs // fold_ids.size)
            per_fold[: max_pairs % fold_ids.size] += 1
            for fold, budget in zip(fold_ids, per_fold, strict=True):
                for label, quota in ((True, (budget + 1) // 2), (False, budget // 2)):
                    candidates = np.flatnonzero(keep & (self.folds == fold) & (self.labels == label))
                    limited[candidates[:quota]] = True
            keep = limited
        return self._select(keep)

    def _select(self, keep: np.ndarray) -> Protocol:
        pairs = self.pairs[keep]
        used, remapped = np.unique(pairs, return_inverse=True)
        return Protocol(
            name=self.name,
            images=[self.images[i] for i in used],
            pairs=remapped.reshape(pairs.shape).astype(np.int64),
            labels=self.labels[keep],
            folds=self.folds[keep],
        )


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ProtocolError(f"protocol file not found: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc


def _check_images_exist(images: Iterable[Path], source: Path) -> None:
    missing = [path for path in images if not path.is_file()]
    if missing:
        raise ProtocolError(f"{source}: {len(missing)} image(s) not found, e.g. {missing[0]}")


def _read_cfp_pair_list(path: Path) -> list[Path]:
    """`Pair_list_X.txt`: lines "id relative/path", ids 1..N in order -> paths (index id - 1)."""
    paths: list[Path] = []
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise ProtocolError(f"{path}:{line_no}: expected 'id path', got {line!r}")
        if int(fields[0]) != len(paths) + 1:
            raise ProtocolError(f"{path}:{line_no}: expected id {len(paths) + 1}, got {fields[0]}")
        paths.append((path.parent / fields[1]).resolve())
    if not paths:
        raise ProtocolError(f"{path}: no images listed")
    return paths


def _read_cfp_index_pairs(path: Path, first_count: int, second_count: int) -> np.ndarray:
    """`same.txt` / `diff.txt`: lines "i,j" of 1-based ids -> (n, 2) 0-based indices."""
    rows: list[tuple[int, int]] = []
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 2 or not all(f.strip().isdigit() for f in fields):
            raise ProtocolError(f"{path}:{line_no}: expected 'i,j', got {line!r}")
        first, second = int(fields[0]), int(fields[1])
        if not (1 <= first <= first_count and 1 <= second <= second_count):
            raise ProtocolError(
                f"{path}:{line_no}: ids {first},{second} out of range 1..{first_count} / 1..{second_count}"
            )
        rows.append((first - 1, second - 1))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def load_cfp(root: Path, splits: Sequence[str] = tuple(CFP_SPLITS)) -> dict[str, Protocol]:
    """CFP protocols keyed by split name (`cfp_ff`, `cfp_fp`), all over the same image list.

    `splits` names splits as `cfp_ff` / `cfp_fp` or as the official folder names `FF` / `FP`.
    `images` = the 5,000 frontal images then the 2,000 profile ones; fold ids 0..9 from folders 01..10.
    """
    root = Path(root)
    protocol_dir = root / "Protocol"
    if not protocol_dir.is_dir():
        raise ProtocolError(f"not a CFP root (no Protocol/ folder): {root}")
    splits = [_CFP_ALIASES.get(split, split) for split in splits]
    unknown = set(splits) - set(CFP_SPLITS)
    if unknown:
        raise ProtocolError(f"unknown CFP split(s) {sorted(unknown)}; choose from {sorted(CFP_SPLITS)}")
    frontal = _read_cfp_pair_list(protocol_dir / "Pair_list_F.txt")
    profile = _read_cfp_pair_list(protocol_dir / "Pair_list_P.txt")
    images = frontal + profile
    _check_images_exist(images, protocol_dir)

    protocols: dict[str, Protocol] = {}
    for name in splits:
        split = CFP_SPLITS[name]
        second_list, second_offset = (frontal, 0) if split == "FF" else (profile, len(frontal))
        fold_dirs = sorted(p for p in (protocol_dir / "Split" / split).glob("*") if p.is_dir())
        if not fold_dirs:
            raise ProtocolError(f"no fold folders in {protocol_dir / 'Split' / split}")
        pairs, labels, folds = [], [], []
        for fold, fold_dir in enumerate(fold_dirs):
            for file_name, label in (("same.txt", True), ("diff.txt", False)):
                indices = _read_cfp_index_pairs(fold_dir / file_name, len(frontal), len(second_list))
                indices[:, 1] += second_offset
                pairs.append(indices)
                labels.append(np.full(len(indices), label))
                folds.append(np.full(len(indices), fold, dtype=np.int64))
        protocols[name] = Protocol(
            name=name,
            images=images,
            pairs=np.concatenate(pairs),
            labels=np.concatenate(labels),
            folds=np.concatenate(folds),
        )
    return protocols


def balanced_folds(labels: np.ndarray, num_folds: int = DEFAULT_FOLDS) -> np.ndarray:
    """Deterministic fold ids (P,): same and different pairs are each cut into `num_folds` contiguous chunks
    (in file order) and chunk k of both goes to fold k, so every fold holds both classes.

    Uses fewer folds when a class has fewer than `num_folds` pairs (at least 2 folds are needed).
    """
    labels = np.asarray(labels, dtype=bool)
    num_folds = min(num_folds, int(labels.sum()), int((~labels).sum()))
    if num_folds < 2:
        raise ProtocolError("need at least 2 same and 2 different pairs to form folds")
    folds = np.empty(labels.size, dtype=np.int64)
    for label in (True, False):
        members = np.flatnonzero(labels == label)
        folds[members] = np.arange(members.size) * num_folds // members.size
    return folds


def _index_images(named_pairs: list[tuple[Path, Path]]) -> tuple[list[Path], np.ndarray]:
    index: dict[Path, int] = {}
    for pair in named_pairs:
        for path in pair:
            index.setdefault(path, len(index))
    pairs = np.array([(index[a], index[b]) for a, b in named_pairs], dtype=np.int64).reshape(-1, 2)
    return list(index), pairs


def load_lfw_pairs(pairs_file: Path, image_root: Path | None = None, name: str = "pairs") -> Protocol:
    """LFW `pairs.txt` -> Protocol. `image_root` holds `name/name_000n.jpg` (default: the file's folder).

    With a "folds n" header, fold k is lines k*2n .. (k+1)*2n (n same then n different, LFW's layout);
    with a single-number header, folds come from `balanced_folds`.
    """
    pairs_file = Path(pairs_file)
    root = Path(image_root) if image_root is not None else pairs_file.parent
    lines = [(no, line) for no, line in enumerate(_read_lines(pairs_file), start=1) if line.strip()]
    if not lines:
        raise ProtocolError(f"{pairs_file}: empty file")
    header_no, header = lines[0]
    header_fields = header.split()
    if not (1 <= len(header_fields) <= 2 and all(f.isdigit() for f in header_fields)):
        raise ProtocolError(
            f"{pairs_file}:{header_no}: expected header 'folds pairs_per_fold', got {header!r}"
        )

    def image(person: str, number: str, line_no: int) -> Path:
        if not number.isdigit():
            raise ProtocolError(f"{pairs_file}:{line_no}: image number {number!r} is not an integer")
        return root / person / f"{person}_{int(number):04d}.jpg"

    named_pairs: list[tuple[Path, Path]] = []
    labels: list[bool] = []
    for line_no, line in lines[1:]:
        fields = line.split()
        if len(fields) == 3:
            named_pairs.append((image(fields[0], fields[1], line_no), image(fields[0], fields[2], line_no)))
            labels.append(True)
        elif len(fields) == 4:
            named_pairs.append((image(fields[0], fields[1], line_no), image(fields[2], fields[3], line_no)))
            labels.append(False)
        else:
            raise ProtocolError(
                f"{pairs_file}:{line_no}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {line!r}"
            )

    label_array = np.array(labels, dtype=bool)
    if len(header_fields) == 2:
        num_folds, per_fold = (int(f) for f in header_fields)
        if num_folds * 2 * per_fold != len(labels):
            raise ProtocolError(
                f"{pairs_file}:{header_no}: header announces {num_folds} x 2 x {per_fold} pairs, "
                f"file has {len(labels)}"
            )
        folds = np.arange(len(labels), dtype=np.int64) // (2 * per_fold)
    else:
        folds = balanced_folds(label_array)
    images, pairs = _index_images(named_pairs)
    _check_images_exist(images, pairs_file)
    return Protocol(name=name, images=images, pairs=pairs, labels=label_array, folds=folds)


def _parse_csv_label(value: str, path: Path, line_no: int) -> bool:
    token = value.strip().lower()
    if token in _CSV_TRUE:
        return True
    if token in _CSV_FALSE:
        return False
    raise ProtocolError(f"{path}:{line_no}: label must be 1/0, true/false or same/diff, got {value!r}")


def load_csv_pairs(pairs_file: Path, num_folds: int = DEFAULT_FOLDS, name: str = "pairs") -> Protocol:
    """CSV `path1,path2,label` -> Protocol; paths relative to the CSV's folder; folds: `balanced_folds`."""
    pairs_file = Path(pairs_file)
    rows = list(csv.reader(_read_lines(pairs_file)))
    named_pairs: list[tuple[Path, Path]] = []
    labels: list[bool] = []
    for line_no, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise ProtocolError(
                f"{pairs_file}:{line_no}: expected 'path1,path2,label', got {','.join(row)!r}"
            )
        if not named_pairs and line_no == 1 and row[2].strip().lower() == "label":
            continue  # header row
        label = _parse_csv_label(row[2], pairs_file, line_no)
        first, second = (pairs_file.parent / cell.strip() for cell in row[:2])
        named_pairs.append((first, second))
        labels.append(label)
    if not named_pairs:
        raise ProtocolError(f"{pairs_file}: no pairs")
    label_array = np.array(labels, dtype=bool)
    folds = balanced_folds(label_array, num_folds)
    images, pairs = _index_images(named_pairs)
    _check_images_exist(images, pairs_file)
    return Protocol(name=name, images=images, pairs=pairs, labels=label_array, folds=folds)


def load_pairs_file(pairs_file: Path, image_root: Path | None = None) -> Protocol:
    """A pairs file by extension: `.csv` -> `load_csv_pairs`, anything else -> LFW `pairs.txt` format."""
    pairs_file = Path(pairs_file)
    if pairs_file.suffix.lower() == ".csv":
        return load_csv_pairs(pairs_file)
    return load_lfw_pairs(pairs_file, image_root)
